"""`deconvnet score` (devkit semantics) and the evaluation-server archive."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.cli import main
from deconvnet.data.imageio import write_index_png
from deconvnet.errors import DataError
from deconvnet.inference.score import score_folders
from deconvnet.inference.submission import make_archive, method_slug, write_prediction
from deconvnet.metrics import read_results_csv, results_header

DEMO_EVAL = str(Path(__file__).resolve().parents[2] / "experiments" / "demo" / "eval.yaml")


def _folders(tmp_path, count: int = 4, seed: int = 0):
    """Random GT (with void) and predictions (right 70% of the time) as palette PNGs."""
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    pairs = []
    for i in range(count):
        h, w = rng.integers(20, 40), rng.integers(20, 40)
        gt = rng.integers(0, 21, (h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.1] = 255
        pred = np.where(rng.random((h, w)) < 0.7, np.where(gt == 255, 0, gt),
                        rng.integers(0, 21, (h, w))).astype(np.uint8)
        gt_dir.mkdir(exist_ok=True), pred_dir.mkdir(exist_ok=True)
        write_index_png(gt_dir / f"{i:04d}.png", gt)
        write_index_png(pred_dir / f"{i:04d}.png", pred)
        pairs.append((pred, gt))
    return pred_dir, gt_dir, pairs


def _direct_iou(pairs) -> np.ndarray:
    """Per-class IoU straight from the pixels: TP / (TP + FP + FN), void excluded."""
    pred = np.concatenate([p.ravel() for p, _ in pairs])
    gt = np.concatenate([g.ravel() for _, g in pairs])
    keep = gt != 255
    pred, gt = pred[keep], gt[keep]
    ious = []
    for c in range(21):
        tp = np.sum((pred == c) & (gt == c))
        fp = np.sum((pred == c) & (gt != c))
        fn = np.sum((pred != c) & (gt == c))
        ious.append(tp / (tp + fp + fn) * 100 if tp + fp + fn else np.nan)
    return np.array(ious)


def test_score_agrees_with_a_direct_computation(tmp_path):
    pred_dir, gt_dir, pairs = _folders(tmp_path)
    row = score_folders(pred_dir, gt_dir, tmp_path / "out")["score"]
    expected = _direct_iou(pairs)
    np.testing.assert_allclose(row[:-1], expected, atol=1e-9)
    assert row[-1] == pytest.approx(np.nanmean(expected))
    lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert lines[0] == ",".join(results_header())
    assert lines[0].startswith("method,background,aeroplane,") and lines[0].endswith(",tvmonitor,mean")
    assert lines[1].startswith("score,") and len(lines) == 2
    assert float(lines[1].split(",")[-1]) == pytest.approx(np.nanmean(expected), abs=0.05)


def test_score_cli_writes_into_the_prediction_folder_by_default(tmp_path, capsys):
    pred_dir, gt_dir, _ = _folders(tmp_path, count=2)
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 0
    assert (pred_dir / "results.csv").is_file()
    assert "tvmonitor" in capsys.readouterr().out


def test_missing_or_resized_prediction_names_the_file(tmp_path):
    pred_dir, gt_dir, _ = _folders(tmp_path, count=3)
    (pred_dir / "0001.png").unlink()
    with pytest.raises(DataError, match=r"missing prediction .*0001\.png"):
        score_folders(pred_dir, gt_dir)
    write_index_png(pred_dir / "0001.png", np.zeros((5, 7), np.uint8))
    with pytest.raises(DataError, match=r"prediction .*0001\.png is 7x5 but its ground truth"):
        score_folders(pred_dir, gt_dir)
    # the CLI turns it into one line on stderr and exit status 2
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 2


@pytest.mark.parametrize("values", [[21], [37, 254], [21, 200]])
def test_ground_truth_outside_the_classes_is_an_error_naming_the_file_and_values(tmp_path, capsys, values):
    pred_dir, gt_dir, pairs = _folders(tmp_path, count=3)
    gt = pairs[1][1].copy()
    gt[0, : len(values)] = values  # a few stray values, e.g. a mask of another dataset
    write_index_png(gt_dir / "0001.png", gt)
    wanted = ", ".join(str(v) for v in sorted(values))
    with pytest.raises(DataError, match=rf"0001\.png.* \[{wanted}\] outside 0\.\.20 and 255"):
        score_folders(pred_dir, gt_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "results.csv").exists()
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 2
    err = capsys.readouterr().err
    (line,) = [text for text in err.splitlines() if "error" in text]  # besides the progress bar
    assert line.startswith("deconvnet score: error: ") and "0001.png" in line and "Traceback" not in err


def test_a_prediction_outside_the_classes_is_an_error(tmp_path):
    pred_dir, gt_dir, pairs = _folders(tmp_path, count=2)
    pred = pairs[0][0].copy()
    pred[3, 4] = 255  # void is not a prediction
    write_index_png(pred_dir / "0000.png", pred)
    with pytest.raises(DataError, match=r"prediction .*0000\.png holds labels \[255\]"):
        score_folders(pred_dir, gt_dir)


def test_an_empty_ground_truth_folder_is_an_error(tmp_path, capsys):
    pred_dir, _, _ = _folders(tmp_path, count=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"no ground-truth PNGs in {empty}"):
        score_folders(pred_dir, empty)
    with pytest.raises(DataError, match="--gt folder not found"):
        score_folders(pred_dir, tmp_path / "nowhere")
    assert main(["score", "--pred", str(pred_dir), "--gt", str(empty)]) == 2
    assert not (pred_dir / "results.csv").exists()


def test_score_cli_out_writes_there_and_not_into_the_predictions(tmp_path):
    pred_dir, gt_dir, pairs = _folders(tmp_path, count=2)
    out = tmp_path / "elsewhere" / "scores"
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out)]) == 0
    assert not (pred_dir / "results.csv").exists()
    rows = read_results_csv(out / "results.csv")
    assert list(rows) == ["score"]
    np.testing.assert_allclose(rows["score"][:-1], _direct_iou(pairs), atol=0.05)


def test_score_counts_every_cell_of_the_confusion_matrix(tmp_path):
    """A hand-made pair whose IoU per class is known: no void, 3 classes present."""
    gt = np.array([[0, 0, 1, 1], [2, 2, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 7]], np.uint8)
    (tmp_path / "gt").mkdir(), (tmp_path / "pred").mkdir()
    write_index_png(tmp_path / "gt" / "a.png", gt)
    write_index_png(tmp_path / "pred" / "a.png", pred)
    row = score_folders(tmp_path / "pred", tmp_path / "gt")["score"]
    # background: TP 1, FP 1 (a 2 called 0), FN 1 (a 0 called 1) -> 1/3; aeroplane 2/3;
    # bicycle 2/3; the void pixel (predicted 7) counts nowhere; other classes absent (NaN)
    np.testing.assert_allclose(row[:3], [100 / 3, 200 / 3, 200 / 3])
    assert all(np.isnan(row[3:-1]))
    assert row[-1] == pytest.approx((100 / 3 + 400 / 3) / 3)


def test_submission_archive_has_the_server_layout(tmp_path):
    rng = np.random.default_rng(0)
    labels = {f"2008_00{i}": rng.integers(0, 21, (12, 15)).astype(np.uint8) for i in range(3)}
    for image_id, lab in labels.items():
        write_prediction(tmp_path, "EDeconvNet+CRF", image_id, lab)
    archive = make_archive(tmp_path, "EDeconvNet+CRF")
    assert archive == tmp_path / "edeconvnet_crf.tar.gz"
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert names == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in sorted(labels)]
        for image_id, lab in labels.items():
            member = tar.extractfile(f"results/VOC2012/Segmentation/comp6_test_cls/{image_id}.png")
            png = Image.open(member)
            assert png.mode == "P"  # indices are the labels, the palette only colours them
            np.testing.assert_array_equal(np.asarray(png), lab)
            assert png.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1


def test_method_slugs_are_distinct_folder_names():
    slugs = [method_slug(m) for m in ("FCN-8s", "DeconvNet", "DeconvNet+CRF", "EDeconvNet", "EDeconvNet+CRF")]
    assert slugs == ["fcn8s", "deconvnet", "deconvnet_crf", "edeconvnet", "edeconvnet_crf"]


def test_score_reads_a_folder_in_the_server_layout(tmp_path):
    pred_dir, gt_dir, pairs = _folders(tmp_path, count=2)
    nested = tmp_path / "server"
    for i, (pred, _) in enumerate(pairs):
        write_prediction(nested, "DeconvNet", f"{i:04d}", pred)
    direct = score_folders(pred_dir, gt_dir, tmp_path / "a")["score"]
    layout = score_folders(nested / "deconvnet", gt_dir, tmp_path / "b")["score"]
    np.testing.assert_allclose(layout, direct)


def test_eval_without_networks_or_with_a_missing_checkpoint_says_which_key(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["eval", DEMO_EVAL, f"output_dir={out}",
                 "eval.deconvnet_checkpoint=null", "eval.fcn_checkpoint=null"])
    assert code == 2 and "eval.deconvnet_checkpoint" in capsys.readouterr().err
    code = main(["eval", DEMO_EVAL, f"output_dir={out}",
                 "eval.deconvnet_checkpoint=null", f"eval.fcn_checkpoint={tmp_path}/nope.ckpt"])
    err = capsys.readouterr().err
    assert code == 2 and f"eval.fcn_checkpoint={tmp_path}/nope.ckpt: no such checkpoint" in err
    assert not out.exists()  # nothing written before the inputs are known to be usable


README = Path(__file__).resolve().parents[2] / "README.md"


def _voc_tree_with_val_predictions(base: Path, seed: int = 1):
    """``base/data/VOCdevkit/VOC2012`` with 5 ground-truth PNGs (val lists 2 of them) and
    ``base/my_pngs`` holding predictions for the val ids only; returns the val pairs."""
    (base / "tmp").mkdir()
    pred_dir, gt_tmp, pairs = _folders(base / "tmp", count=5, seed=seed)
    voc = base / "data" / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    gt_tmp.rename(voc / "SegmentationClass")
    val = ["0001", "0003"]
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
    (base / "my_pngs").mkdir()
    val_pairs = []
    for image_id in val:  # no bottle (5) in val: a class absent from both
        pred, gt = (np.where(a == 5, 0, a).astype(np.uint8) for a in pairs[int(image_id)])
        write_index_png(voc / "SegmentationClass" / f"{image_id}.png", gt)
        write_index_png(base / "my_pngs" / f"{image_id}.png", pred)
        val_pairs.append((pred, gt))
    return val_pairs


def test_the_readme_score_example_works_as_written(tmp_path, monkeypatch, capsys):
    lines = [line.split("#")[0].split() for line in README.read_text().splitlines()
             if line.startswith("deconvnet score ")]
    assert len(lines) == 1, "the README has one `deconvnet score` example"
    val_pairs = _voc_tree_with_val_predictions(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(lines[0][1:]) == 0, capsys.readouterr().err
    row = read_results_csv(tmp_path / "my_pngs" / "results.csv")["score"]
    expected = _direct_iou(val_pairs)  # only the two val images
    np.testing.assert_allclose(row[:-1], expected, atol=0.05, equal_nan=True)
    out = capsys.readouterr().out
    assert "2 images scored" in out
    assert np.isnan(expected[5]) and np.sum(np.isnan(expected)) == 1  # bottle only
    assert "nan: a class in neither the ground truth nor the predictions; the mean is over the " \
           "other 20 classes" in out


def test_score_limited_by_an_ids_file_or_a_split(tmp_path, capsys):
    val_pairs = _voc_tree_with_val_predictions(tmp_path)
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    gt, pred = voc / "SegmentationClass", tmp_path / "my_pngs"
    # without a filter every ground-truth PNG needs a prediction, and the error says how to filter
    assert main(["score", "--pred", str(pred), "--gt", str(gt)]) == 2
    assert "--split/--ids" in capsys.readouterr().err
    ids = tmp_path / "ids.txt"
    ids.write_text("0003\n\n0001\n")
    row = score_folders(pred, gt, tmp_path / "a", ids=["0001", "0003"])["score"]
    np.testing.assert_allclose(row[:-1], _direct_iou(val_pairs), atol=1e-9)
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--ids", str(ids),
                 "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_allclose(read_results_csv(tmp_path / "b" / "results.csv")["score"], row,
                               atol=0.05, equal_nan=True)
    capsys.readouterr()
    # mistakes give one line naming what to fix
    for args, needle in (
        (["--split", "val"], "--split val needs --root"),
        (["--root", str(tmp_path / "data")], "--root is only used with --split"),
        (["--split", "train", "--root", str(tmp_path / "data")],
         "split list of --split train not found"),
        (["--ids", str(tmp_path / "none.txt")], "--ids file not found"),
    ):
        assert main(["score", "--pred", str(pred), "--gt", str(gt), *args]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    ids.write_text("0001\n0002\n")  # 0002 has ground truth but no prediction
    with pytest.raises(DataError, match=r"missing prediction .*0002\.png"):
        score_folders(pred, gt, ids=["0001", "0002"])
    with pytest.raises(DataError, match=r"no ground truth .*0009\.png"):
        score_folders(pred, gt, ids=["0001", "0009"])
def test_slugs_of_unusual_names_and_archives_elsewhere(tmp_path):
    assert method_slug("My Net+CRF (v2)!") == "my_net_crf_v2"  # no leading/trailing/double _
    assert method_slug("+FCN-8s+") == "fcn8s"
    labels = np.array([[0, 300 % 256], [20, 255]], np.int64)  # any integer array: stored as uint8
    png = write_prediction(tmp_path / "root", "DeconvNet", "img1", labels, competition="comp5")
    assert png == tmp_path / "root" / "deconvnet" / "results/VOC2012/Segmentation/comp5_test_cls/img1.png"
    np.testing.assert_array_equal(np.asarray(Image.open(png)), labels.astype(np.uint8))
    archive = make_archive(tmp_path / "root", "DeconvNet", competition="comp5",
                           archive_dir=tmp_path / "out" / "deep")
    assert archive == tmp_path / "out" / "deep" / "deconvnet.tar.gz"
    with tarfile.open(archive) as tar:
        assert [m.name for m in tar.getmembers() if m.isfile()] == [
            "results/VOC2012/Segmentation/comp5_test_cls/img1.png"]
    with pytest.raises(FileNotFoundError, match=r"no prediction PNGs in .*fcn8s.*nothing to archive"):
        make_archive(tmp_path / "root", "FCN-8s")


# ------------------------------------------------- score: the details mutation testing asked for


def _one_pair(tmp_path, gt: np.ndarray, pred: np.ndarray, name: str = "a") -> tuple[Path, Path]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(exist_ok=True), pred_dir.mkdir(exist_ok=True)
    write_index_png(gt_dir / f"{name}.png", gt)
    write_index_png(pred_dir / f"{name}.png", pred)
    return pred_dir, gt_dir


def test_top_level_pngs_win_over_a_nested_server_layout(tmp_path):
    gt = np.array([[0, 1], [1, 1]], np.uint8)
    pred_dir, gt_dir = _one_pair(tmp_path, gt, gt)  # perfect at the top level
    nested = pred_dir / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    nested.mkdir(parents=True)
    write_index_png(nested / "a.png", np.zeros((2, 2), np.uint8))  # a stale, wrong copy
    assert score_folders(pred_dir, gt_dir, tmp_path / "out")["score"][1] == 100.0


def test_a_comp5_server_layout_is_read(tmp_path):
    gt = np.array([[0, 1], [1, 1]], np.uint8)
    pred = np.array([[0, 0], [1, 1]], np.uint8)
    _, gt_dir = _one_pair(tmp_path, gt, pred)
    layout = tmp_path / "comp5run"
    nested = layout / "results" / "VOC2012" / "Segmentation" / "comp5_test_cls"
    nested.mkdir(parents=True)
    write_index_png(nested / "a.png", pred)
    row = score_folders(layout, gt_dir, tmp_path / "out")["score"]
    np.testing.assert_allclose(row[:2], [50.0, 200 / 3])  # background 1/(1+1), aeroplane 2/(2+1)


def test_a_missing_prediction_folder_is_named_as_pred(tmp_path):
    _, gt_dir = _one_pair(tmp_path, np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"^--pred folder not found: .*nowhere$"):
        score_folders(tmp_path / "nowhere", gt_dir)


def test_missing_prediction_hint_only_without_ids(tmp_path):
    pred_dir, gt_dir, _ = _folders(tmp_path, count=2)
    (pred_dir / "0001.png").unlink()
    with pytest.raises(DataError) as without_ids:
        score_folders(pred_dir, gt_dir)
    assert str(without_ids.value).endswith("needs a label PNG of the same name "
                                           "(score one split only with --split/--ids)")
    with pytest.raises(DataError) as with_ids:
        score_folders(pred_dir, gt_dir, ids=["0000", "0001"])
    assert str(with_ids.value).endswith("needs a label PNG of the same name")


def test_a_resized_prediction_names_both_sizes_width_first(tmp_path):
    gt = np.zeros((3, 5), np.uint8)  # 5 wide, 3 high
    pred_dir, gt_dir = _one_pair(tmp_path, gt, np.zeros((4, 6), np.uint8))
    with pytest.raises(DataError, match=r"is 6x4 but its ground truth .*a\.png is 5x3: "):
        score_folders(pred_dir, gt_dir)


def test_a_prediction_of_exactly_num_classes_is_an_error(tmp_path):
    pred = np.zeros((2, 3), np.uint8)
    pred[1, 2] = 21  # one past tvmonitor
    pred_dir, gt_dir = _one_pair(tmp_path, np.zeros((2, 3), np.uint8), pred)
    with pytest.raises(DataError, match=r"holds labels \[21\] outside 0\.\.20$"):
        score_folders(pred_dir, gt_dir)


def test_score_with_fewer_classes_writes_their_header(tmp_path):
    gt = np.array([[0, 1, 2, 2]], np.uint8)
    pred_dir, gt_dir = _one_pair(tmp_path, gt, gt)
    row = score_folders(pred_dir, gt_dir, tmp_path / "out", num_classes=3)["score"]
    assert row == [100.0, 100.0, 100.0, 100.0]
    header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert header == "method,class0,class1,class2,mean"  # names only for the 21 VOC classes


def test_score_logs_each_class_beside_its_name_and_the_absent_count(tmp_path, caplog):
    # background IoU 1/2 = 50, aeroplane 2/3; the other 19 classes absent
    gt = np.array([[0, 1], [1, 1]], np.uint8)
    pred = np.array([[0, 0], [1, 1]], np.uint8)
    pred_dir, gt_dir = _one_pair(tmp_path, gt, pred)
    with caplog.at_level(logging.INFO, logger="deconvnet.inference.score"):
        score_folders(pred_dir, gt_dir, tmp_path / "out")
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "1 images scored; per-class IoU (%):"
    assert lines[1].split() == ["background", "50.0"]
    assert lines[2].split() == ["aeroplane", "66.7"]
    assert lines[21].split() == ["tvmonitor", "nan"]
    assert lines[22].split() == ["mean", "58.3"]
    assert lines[23].endswith("the mean is over the other 2 classes")
    assert lines[24] == f"written {tmp_path / 'out' / 'results.csv'}"
