"""deconvnet download official...: the release's files and archives, placed as the release lays them out."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import logging
import re
import tarfile
import threading
from dataclasses import replace

import pytest

from deconvnet.cli import main
from deconvnet.data.download import OFFICIAL, OFFICIAL_GROUPS, ReleaseFile, download_official
from deconvnet.errors import DataError, UserError


def test_the_table_holds_the_published_urls():
    release = "http://cvlab.postech.ac.kr/research/deconvnet"
    assert OFFICIAL["official-model"].url == f"{release}/model/DeconvNet/DeconvNet_trainval_inference.caffemodel"
    assert OFFICIAL["official-vgg16"].url == f"{release}/model/VGG_conv/VGG_ILSVRC_16_layers_conv.caffemodel"
    assert OFFICIAL["official-edgebox-cache"].url == f"{release}/data/edgebox_cached.tar.gz"
    assert OFFICIAL["official-voc-seg-aug"].url == f"{release}/data/VOC2012_SEG_AUG.tar.gz"
    assert OFFICIAL["official-fcn8s"].url == "http://dl.caffe.berkeleyvision.org/fcn-8s-pascal.caffemodel"
    assert set(OFFICIAL_GROUPS["official"]) == set(OFFICIAL)
    assert all(spec.size for spec in OFFICIAL.values())


@pytest.fixture
def served(tmp_path):
    source = tmp_path / "served"
    source.mkdir()
    model = source / "DeconvNet_trainval_inference.caffemodel"
    model.write_bytes(b"\x12\x04fake" * 1000)
    archive = source / "edgebox_cached.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"MATLAB 5.0 MAT-file"
        info = tarfile.TarInfo("edgebox_cached/VOC2012_TEST/2008_000001.mat")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    files = {
        "official-model": ReleaseFile(model.as_uri(), "model/DeconvNet", "about 8 kB", "the model"),
        "official-edgebox-cache": ReleaseFile(archive.as_uri(), ".", "not published", "the boxes", archive=True),
    }
    return files, model, archive


def _logged(caplog) -> str:
    text = "\n".join(record.getMessage() for record in caplog.records)
    caplog.clear()
    return text


def test_files_and_archives_land_where_the_release_puts_them(served, tmp_path, caplog):
    # the lines are logged (the CLI prints them): read through caplog, no CLI handler needed
    caplog.set_level(logging.INFO, logger="deconvnet")
    files, model, archive = served
    root = tmp_path / "data" / "official"
    paths = download_official("official", root, files=files)
    printed = _logged(caplog)
    assert "about 8 kB" in printed and "not published" in printed  # said before fetching
    target = root / "model" / "DeconvNet" / "DeconvNet_trainval_inference.caffemodel"
    assert paths[0] == target and target.read_bytes() == model.read_bytes()
    assert (root / "edgebox_cached" / "VOC2012_TEST" / "2008_000001.mat").is_file()
    assert not (root / "edgebox_cached.tar.gz").exists()
    assert not [p for p in root.iterdir() if "extracting" in p.name]
    marker = (root / ".official-model.complete").read_text()
    assert hashlib.sha256(model.read_bytes()).hexdigest() in marker

    model.unlink()
    archive.unlink()  # a second run must not look at the sources
    download_official("official", root, files=files)
    assert "2 already there" in _logged(caplog)


def test_an_unreachable_file_says_where_to_put_it(tmp_path):
    files = {"official-model": ReleaseFile((tmp_path / "gone.caffemodel").as_uri(), "model/DeconvNet", "1 GB", "m")}
    with pytest.raises(DataError, match="put the file at .*model/DeconvNet/gone.caffemodel by hand"):
        download_official("official-model", tmp_path / "root", files=files)


def test_cli_lists_the_pieces(capsys):
    with pytest.raises(SystemExit):
        main(["download", "official-nothing", "--root", "x"])
    assert "official-edgebox-cache" in capsys.readouterr().err


# ------------------------------------------ the details mutation testing asked for


def test_complete_pieces_of_the_real_table_are_not_fetched_again(tmp_path, caplog):
    # every piece of official-inference already complete: nothing is fetched (the URLs are
    # the real ones, unreachable here), and each path is where the release puts it
    caplog.set_level(logging.INFO, logger="deconvnet")
    root = tmp_path / "official"
    root.mkdir()
    for name in OFFICIAL_GROUPS["official-inference"]:
        (root / f".{name}.complete").write_text("done\n")
    paths = download_official("official-inference", root)
    assert paths == [root / "model" / "DeconvNet" / "DeconvNet_trainval_inference.caffemodel",
                     root / "model" / "FCN" / "fcn-8s-pascal.caffemodel", root, root]
    assert f"official-inference: 4 piece(s) into {root}, 4 already there" in _logged(caplog)


def test_an_unknown_piece_lists_the_groups_and_the_pieces(tmp_path):
    with pytest.raises(UserError) as error:
        download_official("official-nothing", tmp_path)
    expected = ", ".join([*OFFICIAL_GROUPS, *OFFICIAL])
    assert str(error.value) == f"unknown release piece 'official-nothing'; choose one of {expected}"
    assert expected.startswith("official, official-models, official-inference, official-training, official-model")


def test_a_partial_file_is_kept_and_named_when_the_server_is_down(tmp_path):
    url = (tmp_path / "gone.caffemodel").as_uri()
    files = {"official-model": ReleaseFile(url, "model/DeconvNet", "1 GB", "m")}
    root = tmp_path / "root"
    part = root / "model" / "DeconvNet" / "gone.caffemodel.part"
    with pytest.raises(DataError) as nothing_yet:
        download_official("official-model", root, files=files)
    assert str(nothing_yet.value).endswith("by hand.")  # no partial file to mention
    part.write_bytes(b"half")
    with pytest.raises(DataError) as partial:
        download_official("official-model", root, files=files)
    assert str(partial.value).endswith(f"by hand. The partial file {part} is kept; run again to resume.")
    assert part.read_bytes() == b"half"


def test_a_published_md5_is_checked(served, tmp_path):
    files, model, _ = served
    good = {"official-model": replace(files["official-model"], md5=hashlib.md5(model.read_bytes()).hexdigest())}
    assert download_official("official-model", tmp_path / "a", files=good)[0].read_bytes() == model.read_bytes()
    bad = {"official-model": replace(files["official-model"], md5="0" * 32)}
    root = tmp_path / "b"
    with pytest.raises(DataError) as error:
        download_official("official-model", root, files=bad)
    assert str(error.value) == ("checksum mismatch for DeconvNet_trainval_inference.caffemodel; the corrupt "
                                "download was deleted, run again to download it afresh")
    assert list((root / "model" / "DeconvNet").iterdir()) == []


@pytest.fixture
def http_folder(tmp_path):
    """A loopback HTTP server of tmp_path/served; yields (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir(exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", folder
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_pieces_over_http_land_and_say_where_with_their_sha256(http_folder, tmp_path, caplog, monkeypatch, capsys):
    caplog.set_level(logging.INFO, logger="deconvnet")
    base, folder = http_folder
    payload = bytes(range(256)) * 16  # 4 kB
    (folder / "m.caffemodel").write_bytes(payload)
    with tarfile.open(folder / "boxes.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("edgebox_cached/a.mat")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"mat"))
    # small chunks: the progress bars (shown from 64 chunks on) and the chunked hashing run
    monkeypatch.setattr("deconvnet.data.download.CHUNK", 16)
    files = {"official-model": ReleaseFile(f"{base}/m.caffemodel", "model/DeconvNet", "4 kB", "m"),
             "official-edgebox-cache": ReleaseFile(f"{base}/boxes.tar.gz", ".", "?", "b", archive=True)}
    root = tmp_path / "root"
    paths = download_official("official", root, files=files)
    target = root / "model" / "DeconvNet" / "m.caffemodel"
    assert paths == [target, root]
    assert target.read_bytes() == payload and (root / "edgebox_cached" / "a.mat").read_bytes() == b"mat"
    digest = hashlib.sha256(payload).hexdigest()
    text = _logged(caplog)
    assert f"official-model: ready in {target} (sha256 {digest[:16]}...)" in text
    assert f"official-edgebox-cache: ready in {root} (sha256 " in text
    assert f"official: 2 piece(s) into {root}, 0 already there" in text
    # progress bars with their totals: the download (Content-Length), the hash, the unpacking
    bars = capsys.readouterr().err
    assert re.search(r"m\.caffemodel\.part: 100%\|[^|]*\| 4\.00k/4\.00k", bars)
    assert re.search(r"sha256 m\.caffemodel: 100%\|[^|]*\| 4\.00k/4\.00k \[[^]]*B/s\]", bars)
    assert "extracting boxes.tar.gz: 100%" in bars and "file/s]" in bars


def test_a_local_copy_shows_its_progress(served, tmp_path, monkeypatch, capsys):
    files, model, _ = served
    monkeypatch.setattr("deconvnet.data.download.CHUNK", 16)  # the bar is shown from 64 chunks on
    target = download_official("official-model", tmp_path / "root", files=files)[0]
    assert target.read_bytes() == model.read_bytes()
    bars = capsys.readouterr().err
    assert re.search(r"DeconvNet_trainval_inference\.caffemodel\.part: 100%\|[^|]*\| 5\.86k/5\.86k", bars)


def _archive_with(path, *names: str):
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
    return path


def test_an_archive_entry_that_exists_already_is_refused(tmp_path):
    archive = _archive_with(tmp_path / "boxes.tar.gz", "edgebox_cached/a.mat")
    files = {"official-edgebox-cache": ReleaseFile(archive.as_uri(), ".", "?", "b", archive=True)}
    root = tmp_path / "root"
    (root / "edgebox_cached").mkdir(parents=True)
    with pytest.raises(DataError) as error:
        download_official("official-edgebox-cache", root, files=files)
    assert str(error.value) == (f"{root / 'edgebox_cached'} already exists but was not unpacked by "
                                "`deconvnet download`; move or delete it first")
    assert not [p for p in root.iterdir() if "extracting" in p.name]


def test_an_archive_member_outside_its_folder_is_refused(tmp_path):
    archive = _archive_with(tmp_path / "evil.tar.gz", "../escaped.txt")
    files = {"official-edgebox-cache": ReleaseFile(archive.as_uri(), "inner", "?", "b", archive=True)}
    root = tmp_path / "root"
    with pytest.raises(DataError, match=r"^cannot unpack .*evil\.tar\.gz: .*\. Delete it and download again\.$"):
        download_official("official-edgebox-cache", root, files=files)
    assert not (root / "escaped.txt").exists() and not (root / "inner" / "escaped.txt").exists()
