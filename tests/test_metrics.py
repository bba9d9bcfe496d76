"""Confusion-matrix IoU and the Table 1 files (results.csv / results.md)."""

from __future__ import annotations

import math

import pytest
import torch

from deconvnet.metrics import (
    METHODS,
    confusion_matrix,
    iou_percent,
    mean_iou,
    paper_table,
    per_class_iou,
    read_results_csv,
    results_markdown,
    write_results_csv,
)

HEADER = ("method,background,aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,diningtable,"
          "dog,horse,motorbike,person,pottedplant,sheep,sofa,train,tvmonitor,mean")


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
    assert any(line.startswith("`nan`: the class occurs neither in the ground truth nor in the "
                               "predictions") for line in lines)
    assert "- DeconvNet: mean over the 19 classes present (absent: cow, sheep)." in lines
    i = next(k for k, line in enumerate(lines) if line.startswith("| DeconvNet | ours |"))
    assert lines[i].endswith("| 57.2 | nan | 51.9 | 74.2 | 58.8 | 68.0 | 19 of 21 classes |")
    assert lines[i + 1].endswith("| 59.8 | 69.6 | all 21 classes |")  # the paper's own mean
    assert lines[i + 2] == "| | paper, same classes |" + " |" * 21 + " 69.0 | 19 of 21 classes |"
    assert lines[i + 3].startswith("| | diff | -1.0 |")
    assert lines[i + 3].endswith("| -1.0 | nan | -1.0 | -1.0 | -1.0 | -1.0 | 19 of 21 classes |")
    header = next(line for line in lines if line.startswith("| method |"))
    cells = [len(line.split("|")) for line in (header, *lines[i:i + 4])]
    assert len(set(cells)) == 1  # every row has the header's columns
