"""Confusion-matrix IoU and the Table 1 files (results.csv / results.md)."""

from __future__ import annotations

import math

import pytest
import torch

from deconvnet.metrics import (
    METHODS,
    class_names,
    confusion_matrix,
    iou_percent,
    mean_iou,
    paper_table,
    per_class_iou,
    pixel_accuracy,
    read_results_csv,
    results_header,
    results_markdown,
    write_results_csv,
    write_results_markdown,
)

HEADER = (
    "method,background,aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,diningtable,"
    "dog,horse,motorbike,person,pottedplant,sheep,sofa,train,tvmonitor,mean"
)


def test_confusion_ignores_void_and_iou_skips_absent_classes():
    target = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 3], [2, 0, 1, 3]])
    conf = confusion_matrix(pred, target, num_classes=4)
    assert int(conf.sum()) == 6  # the two void pixels are not counted
    iou = per_class_iou(conf)
    assert iou[0].item() == pytest.approx(1 / 3) and iou[1].item() == pytest.approx(2 / 3)
    assert iou[2].item() == pytest.approx(1 / 2) and math.isnan(iou[3].item())
    assert mean_iou(conf) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_results_csv_header_is_exact_and_round_trips(tmp_path):
    conf = torch.eye(21, dtype=torch.int64) * 5
    conf[1, 2] = 5  # aeroplane half right
    rows = {"DeconvNet": iou_percent(conf), "EDeconvNet+CRF": iou_percent(torch.eye(21) * 3)}
    path = write_results_csv(tmp_path / "results.csv", rows)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1].split(",")[:3] == ["DeconvNet", "100.0", "50.0"]
    back = read_results_csv(path)
    assert list(back) == ["DeconvNet", "EDeconvNet+CRF"]
    assert back["DeconvNet"][2] == pytest.approx(50.0)  # bicycle: 5 / (5 + 5)
    assert back["DeconvNet"][-1] == pytest.approx(round((19 * 100 + 50 + 50) / 21, 1))
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file


def test_paper_table_ships_with_the_package():
    paper = paper_table()
    assert set(METHODS) <= set(paper)
    assert [paper[m][-1] for m in METHODS] == [62.2, 69.6, 70.5, 71.7, 72.5]
    assert len(paper["EDeconvNet+CRF"]) == 22


def test_results_markdown_shows_the_paper_and_the_difference():
    ours = [p - 1.0 for p in paper_table()["DeconvNet"]]
    text = results_markdown({"DeconvNet": ours, "Other": ours})
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("| DeconvNet | ours |"))
    assert lines[i + 1].startswith("| | paper | 92.7 | 85.9")
    assert lines[i + 2].startswith("| | diff | -1.0 | -1.0")
    assert lines[i + 2].endswith("| -1.0 | all 21 classes |")
    assert "nan" not in text  # no nan, no explanation of it
    # a method the paper does not have gets no paper line
    j = next(k for k, line in enumerate(lines) if line.startswith("| Other | ours |"))
    assert j == len(lines) - 1


def test_results_markdown_explains_nan_and_compares_the_mean_over_the_same_classes():
    paper = paper_table()["DeconvNet"]
    ours = [p - 1.0 for p in paper[:-1]]
    ours[10] = ours[17] = float("nan")  # cow and sheep: in neither ground truth nor prediction
    # our mean over the 19 present classes; the paper's over the same 19, by hand from Table 1:
    # (sum of the 21 DeconvNet values 1461.9 - cow 73.4 - sheep 77.4) / 19 = 69.0053
    ours.append(69.00526 - 1.0)
    lines = results_markdown({"DeconvNet": ours}).splitlines()
    assert any(
        line.startswith("`nan`: the class occurs neither in the ground truth nor in the predictions") for line in lines
    )
    assert "- DeconvNet: mean over the 19 classes present (absent: cow, sheep)." in lines
    i = next(k for k, line in enumerate(lines) if line.startswith("| DeconvNet | ours |"))
    assert lines[i].endswith("| 57.2 | nan | 51.9 | 74.2 | 58.8 | 68.0 | 19 of 21 classes |")
    assert lines[i + 1].endswith("| 59.8 | 69.6 | all 21 classes |")  # the paper's own mean
    assert lines[i + 2] == "| | paper, same classes |" + " |" * 21 + " 69.0 | 19 of 21 classes |"
    assert lines[i + 3].startswith("| | diff | -1.0 |")
    assert lines[i + 3].endswith("| -1.0 | nan | -1.0 | -1.0 | -1.0 | -1.0 | 19 of 21 classes |")
    header = next(line for line in lines if line.startswith("| method |"))
    cells = [len(line.split("|")) for line in (header, *lines[i : i + 4])]
    assert len(set(cells)) == 1  # every row has the header's columns


def test_confusion_matrix_against_a_pixel_loop():
    rng = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 7, 9), generator=rng)
    target[torch.rand(target.shape, generator=rng) < 0.2] = 255
    pred = torch.randint(0, 5, (3, 7, 9), generator=rng)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            expected[t, p] += 1  # rows ground truth, columns prediction
    conf = confusion_matrix(pred, target, num_classes=5)
    assert conf.dtype == torch.int64 and torch.equal(conf, expected)
    # another ignore index: 255 is then a label out of range, 4 is skipped
    kept = target.clone()
    kept[kept == 255] = 0
    conf4 = confusion_matrix(pred, kept, num_classes=5, ignore_index=4)
    assert int(conf4[4].sum()) == 0 and int(conf4.sum()) == int((kept != 4).sum())


def test_confusion_matrix_rejects_bad_labels_and_shapes():
    with pytest.raises(ValueError, match=r"shape \(2, 2\) != target shape \(2, 3\)"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match=r"labels \[3, 7\] outside 0\.\.2 and 255"):
        confusion_matrix(torch.zeros(4), torch.tensor([3, 7, 7, 1]), 3)
    # labels equal to num_classes - 1 are fine; a prediction out of range counts as the last class
    conf = confusion_matrix(torch.tensor([9, 2]), torch.tensor([2, 2]), 3)
    assert conf.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 2]]
    assert confusion_matrix(torch.zeros(2), torch.full((2,), 255), 3).sum() == 0  # all void


def test_iou_and_pixel_accuracy_by_hand():
    conf = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])  # class 2 absent
    iou = per_class_iou(conf)
    assert iou[0].item() == pytest.approx(3 / 6) and iou[1].item() == pytest.approx(4 / 7)
    assert math.isnan(iou[2].item())
    assert pixel_accuracy(conf) == pytest.approx(7 / 10)
    assert math.isnan(pixel_accuracy(torch.zeros(3, 3, dtype=torch.int64)))
    # predicted but never in the ground truth: IoU 0, counted in the mean
    only_predicted = torch.tensor([[2, 2], [0, 0]])
    assert per_class_iou(only_predicted).tolist() == [0.5, 0.0]
    assert mean_iou(only_predicted) == pytest.approx(0.25)
    assert iou_percent(conf)[:2] == pytest.approx([50.0, 400 / 7]) and len(iou_percent(conf)) == 4
    assert iou_percent(conf)[-1] == pytest.approx((50 + 400 / 7) / 2)


def test_headers_for_other_class_counts():
    assert class_names(3) == ["class0", "class1", "class2"]
    assert results_header(3) == ["method", "class0", "class1", "class2", "mean"]
    assert results_header()[:3] == ["method", "background", "aeroplane"]


def test_results_csv_writes_nan_and_one_decimal_and_checks_row_length(tmp_path):
    path = write_results_csv(
        tmp_path / "deep" / "r.csv", {"m": [1 / 3 * 100, float("nan"), 12.25, 50.0]}, num_classes=3
    )
    assert path.read_text() == "method,class0,class1,class2,mean\nm,33.3,nan,12.2,50.0\n"
    back = read_results_csv(path)
    assert back["m"][0] == 33.3 and math.isnan(back["m"][1])
    with pytest.raises(ValueError, match=r"row 'm' has 3 values, expected 4"):
        write_results_csv(tmp_path / "bad.csv", {"m": [1.0, 2.0, 3.0]}, num_classes=3)
    assert not (tmp_path / "bad.csv").exists()
    (tmp_path / "blank.csv").write_text("method,a,mean\nx,1.0,1.0\n\n")
    assert read_results_csv(tmp_path / "blank.csv") == {"x": [1.0, 1.0]}


def test_results_markdown_layout(tmp_path):
    ours = list(paper_table()["FCN-8s"])
    ours[1] = float("nan")
    ours[2] += 0.04
    text = results_markdown({"FCN-8s": ours}, title="demo on val")
    lines = text.splitlines()
    assert lines[0] == "# demo on val" and lines[1] == ""
    assert lines[2].startswith("Paper: Noh et al., ICCV 2015, Table 1") and lines[3] == ""
    top = lines.index(next(line for line in lines if line.startswith("| method |")))
    assert "`nan`" in "\n".join(lines[4:top])  # the nan is explained above the table
    assert lines[top] == "| method | | " + " | ".join(HEADER.split(",")[1:]) + " | mean over |"
    assert lines[top + 1] == "|---|---|" + "---:|" * 22 + "---|"
    assert lines[top + 2].startswith("| FCN-8s | ours | ") and lines[top + 2].split(" | ")[3] == "nan"
    # the paper's mean over the 20 classes we have (aeroplane absent), from the paper's own row
    paper = list(paper_table()["FCN-8s"])
    same = (sum(paper[:21]) - paper[1]) / 20
    same_row = next(line for line in lines if line.startswith("| | paper, same classes |"))
    assert f"| {same:.1f} |" in same_row
    diff = next(line for line in lines if line.startswith("| | diff |")).split(" | ")
    assert diff[:5] == ["|", "diff", "+0.0", "nan", "+0.0"]
    assert text.endswith("\n")
    assert results_markdown({"x": [1.0, 2.0]}, num_classes=1).splitlines()[0] == "# Per-class IoU (%)"
    # other class counts are not compared with the paper
    assert "| | paper |" not in results_markdown({"FCN-8s": [1.0, 2.0, 1.5]}, num_classes=2)
    written = write_results_markdown(tmp_path / "sub" / "results.md", {"FCN-8s": ours}, title="demo on val")
    assert written.read_text() == text and not list((tmp_path / "sub").glob(".*tmp"))


def test_edge_cases_of_counting():
    # a label equal to num_classes is already out of range
    with pytest.raises(ValueError, match=r"labels \[3\] outside"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([3, 1]), 3)
    # a negative prediction counts as class 0, not in the row before
    assert confusion_matrix(torch.tensor([-1, 2]), torch.tensor([1, 1]), 3).tolist() == [
        [0, 0, 0],
        [1, 0, 1],
        [0, 0, 0],
    ]
    one_pixel = torch.tensor([[1, 0], [0, 0]])
    assert per_class_iou(one_pixel)[0].item() == 1.0 and pixel_accuracy(one_pixel) == 1.0


def test_files_are_byte_exact_and_folders_are_made(tmp_path):
    path = write_results_csv(tmp_path / "a" / "b" / "r.csv", {"m": [50.0, 50.0]}, num_classes=1)
    assert path.read_bytes() == b"method,class0,mean\nm,50.0,50.0\n"  # \n, not \r\n
    text = results_markdown({"FCN-8s": list(paper_table()["FCN-8s"])})
    lines = text.splitlines()
    assert lines[2] == "Paper: Noh et al., ICCV 2015, Table 1 (PASCAL VOC 2012 test). diff = ours - paper."
    assert all(line.endswith(" |") for line in lines[6:9])
    written = write_results_markdown(tmp_path / "c" / "d" / "results.md", {"FCN-8s": [1.0] * 22})
    assert written.read_text().startswith("# Per-class IoU (%)\n")
