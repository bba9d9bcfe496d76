"""deconvnet download official...: the release's files and archives, placed as the release lays them out."""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile

import pytest

from deconvnet.cli import main
from deconvnet.data.download import OFFICIAL, OFFICIAL_GROUPS, ReleaseFile, download_official
from deconvnet.errors import DataError


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
