"""The release's cached EdgeBoxes (.mat, v5 and v7.3) -> the data.proposals.method=file format."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from deconvnet.caffe.proposals import convert_edgebox_cache, read_mat_boxes, unpad_boxes
from deconvnet.config import load_config
from deconvnet.data.proposals import load_proposals
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.errors import DataError


def to_official(box, height, width):
    """Our 0-based exclusive box -> the release's padded 1-based inclusive row (padarray(I, [W, H]))."""
    x1, y1, x2, y2 = box
    return [x1 + 1 + height, y1 + 1 + width, x2 + height, y2 + width]


def write_v73(path, variable, array):
    """A MATLAB v7.3 file: HDF5 with a 512-byte user block starting with MATLAB's header."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset(variable, data=np.asarray(array, np.float64).T)  # column-major
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 ."
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
    with open(path, "r+b") as f:
        f.write(header)


def expected_boxes(i, height, width):
    """Per-image boxes in our frame: one inside, one crossing the top-left border, one square."""
    side = min(height, width) // 2
    return np.array([[2, 3, 2 + side, 3 + side],
                     [-10 - i, -4, side - 10, side - 4],
                     [width - side, height - side, width + 8, height + 8]], np.float32)


@pytest.fixture
def edgebox_cache(synthetic_voc, tmp_path):
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    folder = tmp_path / "edgebox_cached" / "VOC2012_TEST"
    folder.mkdir(parents=True)
    for i, image_id in enumerate(reader.ids):
        height, width = reader.sizes[i]
        rows = [to_official(b, height, width) for b in expected_boxes(i, height, width)]
        if i % 2:
            write_v73(folder / f"{image_id}.mat", "boxes_padded", rows)
        else:
            scipy.io.savemat(folder / f"{image_id}.mat", {"boxes_padded": np.array(rows, np.float64)})
    return reader, folder


def test_both_mat_formats_convert_to_our_frame_in_file_order(edgebox_cache, tmp_path):
    reader, folder = edgebox_cache
    out = convert_edgebox_cache(folder, reader, tmp_path / "edgebox_val.npz")
    with np.load(out) as data:
        assert sorted(data.files) == sorted(reader.ids)
        for i, image_id in enumerate(reader.ids):
            np.testing.assert_array_equal(data[image_id], expected_boxes(i, *reader.sizes[i]))


def test_the_conversion_matches_the_official_matlab_crop(synthetic_voc):
    """padded_I(box(2):box(4), box(1):box(3), :) of the official script == our window's pixels."""
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    image = reader.image(0)
    height, width = image.shape[:2]
    padded = np.pad(image, ((width, width), (height, height), (0, 0)))  # padarray(I, [W, H])
    row = np.array(to_official([-6, 5, 30, 41], height, width))
    bx1, by1, bx2, by2 = row.astype(int)
    matlab_crop = padded[by1 - 1:by2, bx1 - 1:bx2]
    x1, y1, x2, y2 = unpad_boxes(row[None], height, width)[0].astype(int)
    margin = 64
    framed = np.pad(image, ((margin, margin), (margin, margin), (0, 0)))
    np.testing.assert_array_equal(framed[y1 + margin:y2 + margin, x1 + margin:x2 + margin], matlab_crop)


@pytest.mark.parametrize("extended", [True, False])
def test_load_proposals_keeps_extended_windows_unclipped(edgebox_cache, tmp_path, extended):
    reader, folder = edgebox_cache
    out = convert_edgebox_cache(folder, reader, tmp_path / "edgebox_val.npz")
    cfg = load_config(None, [f"data.root={reader.root}", "data.proposals.method=file",
                             f"data.proposals.file={out}", f"data.proposals.extended={extended}",
                             "data.proposals.min_size=1", f"data.proposals.cache_dir={tmp_path / 'cache'}"])
    proposals = load_proposals(cfg, "val")
    height, width = reader.sizes[1]
    boxes = expected_boxes(1, height, width)
    if not extended:  # a box of another source: clipped to the image as usual
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    np.testing.assert_array_equal(proposals[reader.ids[1]], boxes)


def test_missing_and_foreign_files_give_one_clear_line(edgebox_cache, tmp_path):
    reader, folder = edgebox_cache
    (folder / f"{reader.ids[2]}.mat").unlink()
    with pytest.raises(DataError, match=f"{reader.ids[2]}.mat"):
        convert_edgebox_cache(folder, reader, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()

    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file at all" * 20)
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"boxes": np.zeros((2, 4))})
    for path, needle in ((bad, "not a readable .mat"), (other, "no variable 'boxes_padded'")):
        with pytest.raises(DataError) as info:
            read_mat_boxes(path)
        assert needle in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
