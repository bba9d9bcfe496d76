"""Output folders: whether this process can write there, asked before any expensive work.

``ensure_writable(path, what)`` creates the folder when needed and writes, syncs and removes a
small probe file in it, so a read-only disk, a folder of another user, a path under /proc or
a full disk is reported at once, as one line naming the folder and the fix, rather than
after hours of work when the results are written. ``describe_os_error`` words an OSError
met later while writing (the disk filled up meanwhile) the same way.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from deconvnet.errors import UserError

# bytes the probe writes: enough to need a data block of its own on a full disk
PROBE_BYTES = 64 * 1024


class FolderError(UserError):
    """An output folder that cannot be created or written; the message says how to fix it."""


def describe_os_error(err: OSError, what: str = "", path: str | Path | None = None) -> str:
    """One line: which folder or file (``what`` names the config key or option it comes
    from), what went wrong, and what to do about it."""
    where = str(path if path is not None else (err.filename or "the output folder"))
    label = f"{what} {where}" if what else where
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(where)
        left = f" ({free / 2**20:.0f} MiB left)" if free is not None else ""
        return (f"{label}: the disk is full{left}; free some space (old outputs/, proposal caches) "
                "or write elsewhere, then run the same command again")
    if code == errno.EROFS:
        return f"{label}: the file system is read-only; choose a folder on a writable disk"
    if code in (errno.EACCES, errno.EPERM):
        return (f"{label}: permission denied; choose a folder you may write to, or change its "
                "owner or mode (ls -ld shows them)")
    if code in (errno.ENOENT, errno.ENOTDIR):
        return (f"{label}: cannot be created there ({os.strerror(code)}); choose a folder under "
                "an existing, ordinary directory")
    if code == errno.EEXIST:
        return f"{label}: exists and is not a folder; remove that file or choose another path"
    return f"{label}: {err.strerror or err}; choose another folder"


def _free_bytes(path: str) -> int | None:
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def ensure_writable(path: str | Path, what: str) -> Path:
    """Create the folder ``path`` if needed and prove that a file can be written in it.

    ``what`` names where the path comes from (a config key such as ``output_dir`` or an
    option such as ``--out``); it starts the error message. Raises :class:`FolderError`
    (a UserError) naming the folder, the reason and the fix; returns the folder.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise FolderError(describe_os_error(OSError(errno.EEXIST, "not a folder"), what, folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderError(describe_os_error(err, what, folder)) from None
    probe = folder / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise FolderError(describe_os_error(err, what, folder)) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return folder
