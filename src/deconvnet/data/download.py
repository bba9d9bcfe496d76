"""Download and unpack PASCAL VOC 2012 and SBD: `deconvnet download voc2012|sbd --root DIR`.

Resumable and atomic:
- the archive is fetched into ``<root>/<file>.part``; an interrupted download resumes
  from where it stopped (HTTP Range), and the file only takes its real name once its
  MD5 matches the official checksum (a mismatch deletes it and says so);
- it is unpacked into a temporary folder beside the target and renamed into place, so
  a half-extracted tree never appears under the real name;
- a marker file ``<root>/.<name>.complete`` records success; a second run does nothing.

``file://`` URLs are copied (tests serve a small archive that way).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deconvnet.errors import DataError, UserError
from deconvnet.runtime.atomic import write_text_atomic

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    urls: tuple[str, ...]  # tried in order
    md5: str
    filename: str
    extracted: str  # the folder (relative to root) the archive unpacks to


ARCHIVES: dict[str, Archive] = {
    "voc2012": Archive(
        urls=(
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        ),
        md5="6cd6e144f989b92b3379bac3b3de84fd",
        filename="VOCtrainval_11-May-2012.tar",
        extracted="VOCdevkit/VOC2012",
    ),
    "sbd": Archive(
        urls=(
            "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        ),
        md5="82b4d87ceb2ed10f6038a1cba92111cb",
        filename="benchmark.tgz",
        extracted="benchmark_RELEASE",
    ),
}


def download(name: str, root: str | Path, archives: Mapping[str, Archive] | None = None,
             keep_archive: bool = False) -> Path:
    """Fetch, verify and unpack one dataset into root; returns the extracted folder."""
    archives = ARCHIVES if archives is None else archives
    if name not in archives:
        raise UserError(f"unknown dataset '{name}'; choose one of {', '.join(archives)}")
    spec = archives[name]
    root = Path(root)
    target = root / spec.extracted
    marker = root / f".{name}.complete"
    if marker.is_file() and target.is_dir():
        print(f"{name}: already in {target}; nothing to do")
        return target
    if target.exists():
        raise DataError(
            f"{target} already exists but was not unpacked by `deconvnet download {name}` "
            f"(no {marker}); move or delete it first, or use it as it is"
        )
    root.mkdir(parents=True, exist_ok=True)
    archive = root / spec.filename
    if not (archive.is_file() and _md5(archive) == spec.md5):
        _fetch(spec, archive)
    _extract(archive, root, spec.extracted)
    _write_atomic(marker, f"{spec.filename} md5 {spec.md5}\n")
    if not keep_archive:
        archive.unlink()
    print(f"{name}: ready in {target}")
    return target


def _fetch(spec: Archive, archive: Path) -> None:
    """Download into archive.part (resuming it), check the MD5, then rename to archive."""
    part = archive.with_name(archive.name + ".part")
    errors = []
    for url in spec.urls:
        try:
            if url.startswith("file://"):
                _copy_local(url, part)
            else:
                _http_resume(url, part)
            break
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {err}")
    else:
        kept = f" The partial file {part} is kept; run again to resume." if part.exists() else ""
        raise DataError(f"could not download {spec.filename}: {'; '.join(errors)}. "
                        f"Check the internet connection.{kept}")
    digest = _md5(part)
    if digest != spec.md5:
        part.unlink()
        raise DataError(
            f"checksum mismatch for {spec.filename}: expected md5 {spec.md5}, got {digest}; the "
            f"corrupt download {part} was deleted. Run the command again to download it afresh."
        )
    os.replace(part, archive)


def _copy_local(url: str, part: Path) -> None:
    source = Path(urllib.request.url2pathname(url[len("file://"):]))
    with open(source, "rb") as src, open(part, "wb") as dst, _bar(source.stat().st_size, part.name) as bar:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            bar.update(len(chunk))


def _http_resume(url: str, part: Path) -> None:
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # nothing left to fetch: the .part is already whole
            return
        raise
    with response:
        if done and response.status != 206:  # the server ignored Range: start over
            done = 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(part, "ab" if done else "wb") as out, _bar(total, part.name, initial=done) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _extract(archive: Path, root: Path, extracted: str) -> None:
    """Unpack into a temporary folder under root, then move `extracted` into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.extracting-", dir=root))
    try:
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in tqdm(members, desc=f"extracting {archive.name}", unit="file"):
                    tar.extract(member, staging, filter="data")  # no paths outside staging
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"cannot unpack {archive}: {err}. Delete it and download again.") from None
        source = staging / extracted
        if not source.is_dir():
            raise DataError(f"{archive} does not contain the folder {extracted}; is it the right archive?")
        target = root / extracted
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f, _bar(path.stat().st_size, f"md5 {path.name}") as bar:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, disable=total is not None and total < 64 * CHUNK)


def _write_atomic(path: Path, text: str) -> None:
    write_text_atomic(path, text)
