"""The sha256 of a file's content, the identity recorded for model and proposal files."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # read 1 MiB at a time: model files are hundreds of MiB


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the content of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
