"""Download and unpack PASCAL VOC 2012 and SBD: `deconvnet download voc2012|sbd --root DIR`;
fetch OpenCV's Structured Edge model: `deconvnet download edge-model --root DIR/models`.

Resumable and atomic:
- the archive is fetched into ``<root>/<file>.part``; an interrupted download resumes
  from where it stopped (HTTP Range), and the file only takes its real name once its
  MD5 matches the official checksum (a mismatch deletes it and says so);
- it is unpacked into a temporary folder beside the target and renamed into place, so
  a half-extracted tree never appears under the real name;
- a marker file ``<root>/.<name>.complete`` records success; a second run does nothing.

A single file (``extracted=None``, the edge model ``model.yml.gz``) is fetched the same
resumable way into a hidden name beside the target, checked (``verify``: the edge model is
loaded with ``cv2.ximgproc.createStructuredEdgeDetection``, as its publisher gives no
checksum) and only then renamed to ``<root>/<file>``; a second run checks it and does nothing.

``file://`` URLs are copied (tests serve a small archive that way).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deconvnet.errors import DataError, UserError
from deconvnet.runtime.atomic import write_text_atomic

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    urls: tuple[str, ...]  # tried in order
    md5: str | None  # None: no published checksum (then `verify` checks the file)
    filename: str
    extracted: str | None  # the folder (relative to root) the archive unpacks to; None: a single file
    verify: Callable[[Path], None] | None = None  # raises DataError when the file is unusable


def verify_structured_edge_model(path: Path) -> None:
    """The file loads as OpenCV's Structured Edge Detection model (the only check there is:
    opencv_extra publishes no checksum)."""
    import cv2

    try:
        cv2.ximgproc.createStructuredEdgeDetection(str(path))
    except cv2.error as err:
        raise DataError(f"{path} is not a Structured Edge model OpenCV can load: {str(err).strip()[:200]}") from None


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
    # OpenCV's Structured Edge Detection model (Dollar & Zitnick's BSDS forest), the edges
    # EdgeBoxes runs on in the paper; published with opencv_extra's ximgproc test data.
    "edge-model": Archive(
        urls=(
            "https://raw.githubusercontent.com/opencv/opencv_extra/4.x/testdata/cv/ximgproc/model.yml.gz",
            "https://github.com/opencv/opencv_extra/raw/4.x/testdata/cv/ximgproc/model.yml.gz",
        ),
        md5=None,
        filename="model.yml.gz",
        extracted=None,
        verify=verify_structured_edge_model,
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
    if spec.extracted is None:
        return _download_file(name, spec, root)
    target = root / spec.extracted
    marker = root / f".{name}.complete"
    if marker.is_file() and target.is_dir():
        log.info(f"{name}: already in {target}; nothing to do")
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
    log.info(f"{name}: ready in {target}")
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
    digest = _md5(part) if spec.md5 is not None else None
    if digest != spec.md5:
        part.unlink()
        raise DataError(
            f"checksum mismatch for {spec.filename}: expected md5 {spec.md5}, got {digest}; the "
            f"corrupt download {part} was deleted. Run the command again to download it afresh."
        )
    os.replace(part, archive)


def _download_file(name: str, spec: Archive, root: Path) -> Path:
    """A single file: fetched (resumable) under a hidden name, verified, renamed into place."""
    target = root / spec.filename
    if target.is_file():
        if spec.verify is not None:
            try:
                spec.verify(target)
            except DataError as err:
                raise DataError(f"{err}. It was not replaced: delete it and run "
                                f"`deconvnet download {name}` again.") from None
        log.info(f"{name}: already in {target}; nothing to do")
        return target
    root.mkdir(parents=True, exist_ok=True)
    # the hidden name keeps the suffix: OpenCV reads .gz files by their name
    staged = root / f".partial-{spec.filename}"
    _fetch(spec, staged)
    try:
        if spec.verify is not None:
            spec.verify(staged)
    except DataError as err:
        staged.unlink(missing_ok=True)
        raise DataError(f"{err}; the download was deleted. Run the command again to download it afresh.") from None
    os.replace(staged, target)
    log.info(f"{name}: ready in {target}")
    return target


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


# ---------------------------------------------------------------------------------------------
# The official DeconvNet release (HyeonwooNoh/DeconvNet: model/get_model.sh, data/get_data.sh,
# inference/setup.sh) and the FCN authors' fcn-8s-pascal: `deconvnet download official --root
# data/official` (everything) or one piece by name. Same guarantees as above: resumable
# `.part` downloads, archives unpacked beside the target and moved into place, a
# `.<name>.complete` marker; no checksum is published for these files, so the marker
# records the SHA-256 of what was fetched (a second machine can compare).

RELEASE = "http://cvlab.postech.ac.kr/research/deconvnet"


@dataclass(frozen=True)
class ReleaseFile:
    url: str
    folder: str  # under root, as the release lays it out
    size: str  # said before the download starts; "not published": the progress bar shows the
    # server's Content-Length once the download starts
    what: str
    md5: str | None = None  # none is published for the release's files
    archive: bool = False  # a .tar.gz unpacked into `folder`

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _release_model(folder: str, name: str, size: str, what: str) -> ReleaseFile:
    """The release's ``model/<folder>/<name>.caffemodel``, kept in ``model/<folder>``."""
    return ReleaseFile(f"{RELEASE}/model/{folder}/{name}.caffemodel", f"model/{folder}", size, what)


def _release_archive(name: str, folder: str, what: str) -> ReleaseFile:
    """The release's ``data/<name>.tar.gz`` (no size published), unpacked into ``folder``."""
    return ReleaseFile(f"{RELEASE}/data/{name}.tar.gz", folder, "not published", what, archive=True)


OFFICIAL: dict[str, ReleaseFile] = {
    "official-model": _release_model(
        "DeconvNet", "DeconvNet_trainval_inference", "about 1.0 GB (251.8 M float32 weights)",
        "the trained DeconvNet, BN folded for inference"),
    "official-fcn8s": ReleaseFile(
        "http://dl.caffe.berkeleyvision.org/fcn-8s-pascal.caffemodel", "model/FCN",
        "about 0.54 GB (134 M float32 weights)", "the FCN authors' staged FCN-8s (PASCAL)"),
    "official-vgg16": _release_model(
        "VGG_conv", "VGG_ILSVRC_16_layers_conv", "about 0.55 GB (138 M float32 weights)",
        "VGG16 with fc6/fc7 as convolutions (Caffe style)"),
    "official-stage1": _release_model(
        "stage_1_train_result", "stage_1_train_result", "about 1.0 GB", "stage-1 training result (BN in LEARN mode)"),
    "official-stage2": _release_model(
        "stage_2_train_result", "stage_2_train_result", "about 1.0 GB", "stage-2 training result (BN in LEARN mode)"),
    "official-edgebox-cache": _release_archive(
        "edgebox_cached", ".", "cached extended EdgeBoxes of VOC 2012 test (edgebox_cached/VOC2012_TEST/<id>.mat)"),
    "official-voc2012-test": _release_archive(
        "VOC2012_TEST", ".", "VOC 2012 test images as the release uses them (VOC2012_TEST/)"),
    "official-stage1-lists": _release_archive(
        "stage_1_train_imgset", "imagesets", "stage-1 image/label lists (stage_1_train_imgset/train.txt, val.txt)"),
    "official-stage2-lists": _release_archive(
        "stage_2_train_imgset", "imagesets", "stage-2 window lists (stage_2_train_imgset/train.txt, val.txt)"),
    "official-voc-object": _release_archive(
        "VOC_OBJECT", "VOC2012", "stage-1 training set: object-centred crops and labels"),
    "official-voc-seg-aug": _release_archive(
        "VOC2012_SEG_AUG", "VOC2012", "stage-2 training set: VOC 2012 + SBD images and labels"),
}
OFFICIAL_GROUPS: dict[str, tuple[str, ...]] = {
    "official": tuple(OFFICIAL),
    "official-models": ("official-model", "official-fcn8s", "official-vgg16", "official-stage1",
                        "official-stage2"),
    "official-inference": ("official-model", "official-fcn8s", "official-edgebox-cache",
                           "official-voc2012-test"),
    "official-training": ("official-vgg16", "official-stage1-lists", "official-stage2-lists",
                          "official-voc-object", "official-voc-seg-aug"),
}


def official_names() -> list[str]:
    return [*OFFICIAL_GROUPS, *OFFICIAL]


def download_official(name: str, root: str | Path, files: Mapping[str, ReleaseFile] | None = None) -> list[Path]:
    """Fetch one piece of the official release (or a group, e.g. ``official``) into ``root``.

    Says what will be fetched and how large before starting; skips pieces already complete.
    Returns the downloaded files / unpacked folders' parent for each piece.
    """
    files = OFFICIAL if files is None else files
    groups = OFFICIAL_GROUPS if files is OFFICIAL else {"official": tuple(files)}
    names = groups.get(name, (name,))
    unknown = [n for n in names if n not in files]
    if unknown:
        raise UserError(f"unknown release piece '{unknown[0]}'; choose one of {', '.join([*groups, *files])}")
    root = Path(root)
    todo = [n for n in names if not (root / f".{n}.complete").is_file()]
    log.info(f"{name}: {len(names)} piece(s) into {root}, {len(names) - len(todo)} already there")
    for n in todo:
        log.info(f"  {n:24s} {files[n].size:45s} {files[n].what}")
    return [_fetch_release_piece(n, files[n], root) for n in names]


def _fetch_release_piece(name: str, spec: ReleaseFile, root: Path) -> Path:
    folder = root / spec.folder
    marker = root / f".{name}.complete"
    target = folder / spec.filename
    if marker.is_file():
        return folder if spec.archive else target
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if not target.is_file():
        try:
            if spec.url.startswith("file://"):
                _copy_local(spec.url, part)
            else:
                _http_resume(spec.url, part)
        except (urllib.error.URLError, OSError) as err:
            kept = f" The partial file {part} is kept; run again to resume." if part.exists() else ""
            raise DataError(f"could not download {spec.filename} from {spec.url}: {err}. The release "
                            f"server may be down; put the file at {target} by hand.{kept}") from None
        if spec.md5 is not None and _md5(part) != spec.md5:
            part.unlink()
            raise DataError(f"checksum mismatch for {spec.filename}; the corrupt download was deleted, "
                            "run again to download it afresh")
        os.replace(part, target)
    digest = _sha256(target)
    if spec.archive:
        _extract_all(target, folder)
        target.unlink()
    _write_atomic(marker, f"{spec.filename} sha256 {digest}\n")
    log.info(f"{name}: ready in {folder if spec.archive else target} (sha256 {digest[:16]}...)")
    return folder if spec.archive else target


def _extract_all(archive: Path, folder: Path) -> None:
    """Unpack every top-level entry of ``archive`` beside ``folder``, then move them in."""
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.extracting-", dir=folder))
    try:
        try:
            with tarfile.open(archive) as tar:
                for member in tqdm(tar.getmembers(), desc=f"extracting {archive.name}", unit="file"):
                    tar.extract(member, staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"cannot unpack {archive}: {err}. Delete it and download again.") from None
        entries = list(staging.iterdir())
        clashes = [folder / e.name for e in entries if (folder / e.name).exists()]
        if clashes:
            raise DataError(f"{clashes[0]} already exists but was not unpacked by `deconvnet download`; "
                            "move or delete it first")
        for entry in entries:
            os.rename(entry, folder / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f, _bar(path.stat().st_size, f"sha256 {path.name}") as bar:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()
