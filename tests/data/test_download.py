"""Dataset download: checksum, atomic extraction, skip when done, resume over HTTP."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
from pathlib import Path

import pytest

from deconvnet.data import download as dl
from deconvnet.data.download import ARCHIVES, Archive, download
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.errors import DataError, UserError


def _make_archive(synthetic_voc: Path, path: Path) -> str:
    """A tar of the synthetic VOCdevkit tree (plus a stray top-level file), as VOC's tar."""
    with tarfile.open(path, "w") as tar:
        tar.add(synthetic_voc / "VOCdevkit", arcname="VOCdevkit")
        readme = b"not part of the dataset folder\n"
        info = tarfile.TarInfo("README.txt")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def served(synthetic_voc, tmp_path) -> dict:
    archive = tmp_path / "served" / "fake_voc.tar"
    archive.parent.mkdir()
    md5 = _make_archive(synthetic_voc, archive)
    spec = Archive(urls=(archive.as_uri(),), md5=md5, filename="fake_voc.tar", extracted="VOCdevkit/VOC2012")
    return {"archive": archive, "spec": spec, "root": tmp_path / "data"}


def test_official_table():
    assert ARCHIVES["voc2012"].md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert ARCHIVES["voc2012"].urls[0].endswith("/voc2012/VOCtrainval_11-May-2012.tar")
    assert ARCHIVES["voc2012"].extracted == "VOCdevkit/VOC2012"
    assert ARCHIVES["sbd"].md5 == "82b4d87ceb2ed10f6038a1cba92111cb"
    assert ARCHIVES["sbd"].urls[0].endswith("/benchmark.tgz")


def test_download_extract_and_skip_when_done(served, caplog):
    root = served["root"]
    target = download("voc2012", root, archives={"voc2012": served["spec"]})
    assert target == root / "VOCdevkit" / "VOC2012"
    assert len(VOCSegmentationIndex(root, "trainval")) == 24  # the reader takes it as it is
    assert (root / ".voc2012.complete").is_file()
    assert not (root / "fake_voc.tar").exists() and not (root / "fake_voc.tar.part").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".") and "extracting" in p.name] == []
    assert not (root / "README.txt").exists()  # only the dataset folder is moved into place

    served["archive"].unlink()  # a second run must not even look at the source
    caplog.set_level("INFO", logger="deconvnet")
    assert download("voc2012", root, archives={"voc2012": served["spec"]}) == target
    assert "nothing to do" in caplog.text


def test_checksum_mismatch_deletes_the_download(served):
    bad = Archive(urls=served["spec"].urls, md5="0" * 32, filename="fake_voc.tar",
                  extracted="VOCdevkit/VOC2012")
    root = served["root"]
    with pytest.raises(DataError, match="checksum mismatch") as err:
        download("voc2012", root, archives={"voc2012": bad})
    assert "0" * 32 in str(err.value) and served["spec"].md5 in str(err.value)
    assert list(root.iterdir()) == []  # no archive, no .part, no half-extracted tree


def test_corrupt_archive_leaves_no_tree(served):
    served["archive"].write_bytes(b"<html>404 page saved under the archive's name</html>" * 20)
    md5 = hashlib.md5(served["archive"].read_bytes()).hexdigest()
    spec = Archive(urls=served["spec"].urls, md5=md5, filename="fake_voc.tar", extracted="VOCdevkit/VOC2012")
    root = served["root"]
    with pytest.raises(DataError, match="cannot unpack"):
        download("voc2012", root, archives={"voc2012": spec})
    assert not (root / "VOCdevkit" / "VOC2012").exists()
    assert not (root / ".voc2012.complete").exists()
    assert [p.name for p in root.iterdir()] == ["fake_voc.tar"]  # verified archive kept for a retry


def test_archive_without_the_dataset_folder(served):
    spec = Archive(urls=served["spec"].urls, md5=served["spec"].md5, filename="fake_voc.tar",
                   extracted="benchmark_RELEASE")
    with pytest.raises(DataError, match="does not contain the folder benchmark_RELEASE"):
        download("sbd", served["root"], archives={"sbd": spec})
    assert not (served["root"] / "benchmark_RELEASE").exists()
    assert not (served["root"] / "VOCdevkit").exists()


def test_refuses_to_replace_a_tree_it_did_not_make(served, synthetic_voc):
    with pytest.raises(DataError, match="already exists"):
        download("voc2012", synthetic_voc, archives={"voc2012": served["spec"]})


def test_unreachable_source_keeps_partial_file(served):
    root = served["root"]
    root.mkdir()
    (root / "fake_voc.tar.part").write_bytes(b"x" * 10)
    spec = Archive(urls=("http://127.0.0.1:9/nothing.tar",), md5=served["spec"].md5,
                   filename="fake_voc.tar", extracted="VOCdevkit/VOC2012")
    with pytest.raises(DataError, match="run again to resume"):
        download("voc2012", root, archives={"voc2012": spec})
    assert (root / "fake_voc.tar.part").read_bytes() == b"x" * 10


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one byte string on /fake_voc.tar and honours `Range: bytes=N-` like a real
    server (416 when N is at or past the end), unless ``honour_range`` is False; any other
    path is a 500. Records every request as (path, Range header)."""

    payload = b""
    ranges: list[str] = []
    requests: list[tuple[str, str | None]] = []
    honour_range = True

    def do_GET(self):  # noqa: N802 (http.server's naming)
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        type(self).requests.append((self.path, header))
        if self.path not in ("/fake_voc.tar", "/model.yml.gz"):  # any other path: a broken mirror
            self.send_error(500, "mirror broken")
            return
        start = int(header.split("=")[1].rstrip("-")) if header and self.honour_range else 0
        if start >= len(self.payload) and header:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(self.payload)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.payload[start:]
        self.send_response(206 if header and self.honour_range else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(served):
    """A loopback HTTP server for the served archive; yields its base URL."""
    _RangeHandler.payload = served["archive"].read_bytes()
    _RangeHandler.ranges, _RangeHandler.requests, _RangeHandler.honour_range = [], [], True
    server = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def _http_spec(served, *urls: str) -> Archive:
    return Archive(urls=urls, md5=served["spec"].md5, filename="fake_voc.tar", extracted="VOCdevkit/VOC2012")


def test_a_server_that_ignores_range_restarts_the_file(served, http_server):
    _RangeHandler.honour_range = False
    payload = _RangeHandler.payload
    root = served["root"]
    root.mkdir()
    (root / "fake_voc.tar.part").write_bytes(payload[:1000])
    download("voc2012", root, archives={"voc2012": _http_spec(served, f"{http_server}/fake_voc.tar")},
             keep_archive=True)
    assert _RangeHandler.ranges == ["bytes=1000-"]  # asked to resume, got the whole file (200)
    assert (root / "fake_voc.tar").read_bytes() == payload  # not the part + the whole file
    assert len(VOCSegmentationIndex(root, "val")) == 7


def test_a_416_for_a_complete_partial_file_finishes_it(served, http_server):
    payload = _RangeHandler.payload
    root = served["root"]
    root.mkdir()
    (root / "fake_voc.tar.part").write_bytes(payload)  # killed after the last byte, before the rename
    download("voc2012", root, archives={"voc2012": _http_spec(served, f"{http_server}/fake_voc.tar")})
    assert _RangeHandler.ranges == [f"bytes={len(payload)}-"]
    assert (root / ".voc2012.complete").is_file() and len(VOCSegmentationIndex(root, "val")) == 7
    assert not (root / "fake_voc.tar.part").exists()


def test_a_failing_first_url_falls_back_to_the_next(served, http_server, capsys):
    root = served["root"]
    spec = _http_spec(served, f"{http_server}/broken/fake_voc.tar", f"{http_server}/fake_voc.tar")
    download("voc2012", root, archives={"voc2012": spec})
    assert [path for path, _ in _RangeHandler.requests] == ["/broken/fake_voc.tar", "/fake_voc.tar"]
    assert len(VOCSegmentationIndex(root, "val")) == 7

    # every URL failing: one error naming each of them
    other = served["root"].parent / "other"
    spec = _http_spec(served, f"{http_server}/broken/a.tar", f"{http_server}/broken/b.tar")
    with pytest.raises(DataError, match=r"could not download fake_voc\.tar: .*/broken/a\.tar.*/broken/b\.tar"):
        download("voc2012", other, archives={"voc2012": spec})


def test_an_already_verified_archive_is_not_downloaded_again(served, http_server):
    root = served["root"]
    root.mkdir()
    (root / "fake_voc.tar").write_bytes(_RangeHandler.payload)  # e.g. copied there by hand
    download("voc2012", root, archives={"voc2012": _http_spec(served, f"{http_server}/fake_voc.tar")})
    assert _RangeHandler.requests == []  # checksum matched: no request at all
    assert len(VOCSegmentationIndex(root, "val")) == 7

    # a wrong file under the archive's name is fetched afresh
    fresh = root.parent / "fresh"
    fresh.mkdir()
    (fresh / "fake_voc.tar").write_bytes(b"an older, different file")
    download("voc2012", fresh, archives={"voc2012": _http_spec(served, f"{http_server}/fake_voc.tar")})
    assert [path for path, _ in _RangeHandler.requests] == ["/fake_voc.tar"]
    assert len(VOCSegmentationIndex(fresh, "val")) == 7


def test_http_download_resumes_a_partial_file(served):
    payload = served["archive"].read_bytes()
    _RangeHandler.payload, _RangeHandler.ranges, _RangeHandler.honour_range = payload, [], True
    server = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        root = served["root"]
        root.mkdir()
        half = len(payload) // 2
        (root / "fake_voc.tar.part").write_bytes(payload[:half])
        url = f"http://127.0.0.1:{server.server_port}/fake_voc.tar"
        spec = Archive(urls=(url,), md5=served["spec"].md5, filename="fake_voc.tar",
                       extracted="VOCdevkit/VOC2012")
        download("voc2012", root, archives={"voc2012": spec}, keep_archive=True)
    finally:
        server.shutdown()
        thread.join()
    assert _RangeHandler.ranges == [f"bytes={half}-"]
    assert (root / "fake_voc.tar").read_bytes() == payload
    assert len(VOCSegmentationIndex(root, "val")) == 7


def test_cli_download_reports_errors(monkeypatch, served, capsys):
    from deconvnet.cli import main

    bad = Archive(urls=served["spec"].urls, md5="1" * 32, filename="fake_voc.tar",
                  extracted="VOCdevkit/VOC2012")
    monkeypatch.setitem(dl.ARCHIVES, "sbd", bad)
    assert main(["download", "sbd", "--root", str(served["root"])]) == 2
    assert "checksum mismatch" in capsys.readouterr().err


# ---------------------------------------------------------------- the Structured Edge model


def test_edge_model_entry():
    spec = ARCHIVES["edge-model"]
    assert spec.filename == "model.yml.gz" and spec.extracted is None
    assert all("opencv/opencv_extra" in url and url.endswith("/4.x/testdata/cv/ximgproc/model.yml.gz")
               for url in spec.urls)
    assert spec.verify is dl.verify_structured_edge_model


def _edge_spec(url: str) -> Archive:
    real = ARCHIVES["edge-model"]
    return Archive(urls=(url,), md5=None, filename=real.filename, extracted=None, verify=real.verify)


def test_edge_model_download_over_file_url_is_verified_and_atomic(tmp_path, write_edge_model, caplog):
    source = write_edge_model(tmp_path / "served" / "model.yml.gz")
    root = tmp_path / "data" / "models"
    spec = _edge_spec(source.as_uri())
    target = download("edge-model", root, archives={"edge-model": spec})
    assert target == root / "model.yml.gz" and target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in root.iterdir()) == ["model.yml.gz"]  # no .part, no hidden copy
    source.unlink()  # a second run only checks the file it has
    caplog.set_level("INFO", logger="deconvnet")
    assert download("edge-model", root, archives={"edge-model": spec}) == target
    assert "nothing to do" in caplog.text


def test_edge_model_that_does_not_load_is_deleted(tmp_path):
    source = tmp_path / "served" / "model.yml.gz"
    source.parent.mkdir()
    source.write_bytes(b"<html>a 404 page saved under the model's name</html>")
    root = tmp_path / "models"
    with pytest.raises(DataError, match="not a Structured Edge model.*deleted"):
        download("edge-model", root, archives={"edge-model": _edge_spec(source.as_uri())})
    assert list(root.iterdir()) == []  # nothing half-written under any name
    # a broken file already in place is reported, not silently kept as the model
    (root / "model.yml.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="delete it"):
        download("edge-model", root, archives={"edge-model": _edge_spec(source.as_uri())})


def test_edge_model_http_download_resumes(tmp_path, write_edge_model):
    payload = write_edge_model(tmp_path / "served" / "model.yml.gz").read_bytes()
    _RangeHandler.payload, _RangeHandler.ranges, _RangeHandler.honour_range = payload, [], True
    server = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        root = tmp_path / "models"
        root.mkdir()
        half = len(payload) // 2
        (root / ".partial-model.yml.gz.part").write_bytes(payload[:half])
        url = f"http://127.0.0.1:{server.server_port}/model.yml.gz"
        target = download("edge-model", root, archives={"edge-model": _edge_spec(url)})
    finally:
        server.shutdown()
        thread.join()
    assert _RangeHandler.ranges == [f"bytes={half}-"]
    assert target.read_bytes() == payload
    assert sorted(p.name for p in root.iterdir()) == ["model.yml.gz"]


def test_cli_offers_the_edge_model(monkeypatch, tmp_path, write_edge_model, capsys):
    from deconvnet.cli import main

    source = write_edge_model(tmp_path / "served" / "model.yml.gz")
    monkeypatch.setitem(dl.ARCHIVES, "edge-model", _edge_spec(source.as_uri()))
    assert main(["download", "edge-model", "--root", str(tmp_path / "models")]) == 0
    assert (tmp_path / "models" / "model.yml.gz").is_file()


# ------------------------------------------ the details mutation testing asked for


def test_a_fresh_http_download_asks_for_no_range(served, http_server):
    root = served["root"]
    download("voc2012", root, archives={"voc2012": _http_spec(served, f"{http_server}/fake_voc.tar")})
    assert _RangeHandler.requests == [("/fake_voc.tar", None)]


def test_a_copy_in_many_chunks_shows_its_progress(served, monkeypatch):
    # chunks of 16 bytes: the progress bar (shown from 64 chunks on) counts every chunk copied
    monkeypatch.setattr(dl, "CHUNK", 16)
    root = served["root"]
    target = download("voc2012", root, archives={"voc2012": served["spec"]}, keep_archive=True)
    assert (root / "fake_voc.tar").read_bytes() == served["archive"].read_bytes()
    assert target == root / "VOCdevkit" / "VOC2012"


def test_an_unloadable_edge_model_is_refused_with_opencvs_reason(tmp_path):
    import cv2

    path = tmp_path / "model.yml.gz"
    path.write_bytes(b"garbage")
    try:  # OpenCV's own words for this file, as the user should see them
        cv2.ximgproc.createStructuredEdgeDetection(str(path))
    except cv2.error as err:
        reason = str(err).strip()[:200]
    with pytest.raises(DataError) as error:
        dl.verify_structured_edge_model(path)
    assert str(error.value) == f"{path} is not a Structured Edge model OpenCV can load: {reason}"


def test_an_edge_model_download_says_where_it_is(tmp_path, write_edge_model, caplog):
    caplog.set_level("INFO", logger="deconvnet")
    source = write_edge_model(tmp_path / "served" / "model.yml.gz")
    root = tmp_path / "models"
    download("edge-model", root, archives={"edge-model": _edge_spec(source.as_uri())})
    assert f"edge-model: ready in {root / 'model.yml.gz'}" in [r.getMessage() for r in caplog.records]


def test_every_failed_url_is_named_and_no_partial_file_claimed(served):
    root = served["root"]
    urls = ("http://127.0.0.1:9/a.tar", "http://127.0.0.1:9/b.tar")
    spec = Archive(urls=urls, md5=served["spec"].md5, filename="fake_voc.tar", extracted="VOCdevkit/VOC2012")
    with pytest.raises(DataError) as error:
        download("voc2012", root, archives={"voc2012": spec})
    message = str(error.value)
    assert message.startswith("could not download fake_voc.tar: http://127.0.0.1:9/a.tar: ")
    assert "; http://127.0.0.1:9/b.tar: " in message
    assert message.endswith(". Check the internet connection.")  # nothing fetched: no partial file


def test_download_progress_bars_name_their_file_and_reach_the_total(served, monkeypatch, capsys):
    monkeypatch.setattr(dl, "CHUNK", 16)  # the byte bars are shown from 64 chunks on
    download("voc2012", served["root"], archives={"voc2012": served["spec"]})
    bars = capsys.readouterr().err
    for desc in ("fake_voc.tar.part", "md5 fake_voc.tar.part", "extracting fake_voc.tar"):
        assert re.search(rf"(^|\r){re.escape(desc)}: 100%", bars, re.MULTILINE), desc
    assert "file/s]" in bars  # the unpacking counts files


def _tar_of(path: Path, *names: str) -> str:
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_nested_dataset_folder_lands_beside_existing_siblings(tmp_path):
    archive = tmp_path / "nested.tar"
    md5 = _tar_of(archive, "x/y/z/file.txt")
    spec = Archive(urls=(archive.as_uri(),), md5=md5, filename="nested.tar", extracted="x/y/z")
    root = tmp_path / "not" / "yet" / "root"  # made, parents too
    assert download("nested", root, archives={"nested": spec}) == root / "x" / "y" / "z"  # x/y made
    assert (root / "x" / "y" / "z" / "file.txt").read_bytes() == b"ok"
    # a second dataset under an existing parent (VOCdevkit/ holding another year, say)
    other = tmp_path / "other.tar"
    spec2 = Archive(urls=(other.as_uri(),), md5=_tar_of(other, "x/y/w/file.txt"), filename="other.tar",
                    extracted="x/y/w")
    assert download("other", root, archives={"other": spec2}) == root / "x" / "y" / "w"
    assert (root / "x" / "y" / "z" / "file.txt").is_file()


def test_an_archive_member_outside_the_root_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    md5 = _tar_of(archive, "data/file.txt", "../escaped.txt")
    spec = Archive(urls=(archive.as_uri(),), md5=md5, filename="evil.tar", extracted="data")
    root = tmp_path / "root"
    with pytest.raises(DataError, match=r"^cannot unpack .*evil\.tar: .*\. Delete it and download again\.$"):
        download("evil", root, archives={"evil": spec})
    assert not (root / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (root / "data").exists()


def test_an_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError) as error:
        download("voc2013", tmp_path)
    assert str(error.value) == f"unknown dataset 'voc2013'; choose one of {', '.join(ARCHIVES)}"
    assert ", ".join(ARCHIVES).startswith("voc2012, sbd")


def test_a_dataset_download_says_where_it_is(served, caplog):
    caplog.set_level("INFO", logger="deconvnet")
    target = download("voc2012", served["root"], archives={"voc2012": served["spec"]})
    assert f"voc2012: ready in {target}" in [r.getMessage() for r in caplog.records]


def test_small_files_get_no_byte_bars(served, capsys):
    # below 64 chunks (of 1 MiB) a byte bar would only flash: none for the copy or the hash
    assert served["archive"].stat().st_size < 64 * dl.CHUNK
    download("voc2012", served["root"], archives={"voc2012": served["spec"]})
    bars = capsys.readouterr().err
    assert "fake_voc.tar.part" not in bars and "md5 " not in bars
    assert "extracting fake_voc.tar" in bars  # the file count is shown whatever the size


def test_a_resumed_download_bar_counts_the_bytes_already_there(served, http_server, monkeypatch, capsys):
    monkeypatch.setattr(dl, "CHUNK", 16)
    payload = _RangeHandler.payload
    root = served["root"]
    root.mkdir()
    half = len(payload) // 2
    (root / "fake_voc.tar.part").write_bytes(payload[:half])
    download("voc2012", root, archives={"voc2012": _http_spec(served, f"{http_server}/fake_voc.tar")})
    assert _RangeHandler.ranges == [f"bytes={half}-"]
    # the download's bar (not the md5 one after it): the first half + the rest = the total
    assert re.search(r"(^|\r)fake_voc\.tar\.part: 100%", capsys.readouterr().err, re.MULTILINE)
