"""#13 item 4: every common mistake ends in one `deconvnet X: error:` line, no traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from deconvnet.cli import main
from deconvnet.config import load_config
from deconvnet.data.loader import UserErrorDataLoader
from deconvnet.errors import DataError, ErrorRecord, UserError

REPO = Path(__file__).resolve().parents[1]
DEMO_STAGE1 = str(REPO / "experiments/demo/stage1.yaml")
BAD_MASK = "class mask /data/x.png holds values [37] outside the classes 0..20 and 255 (void)"


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"deconvnet {command}: error: ")
    return lines[0]


class _BadSample(Dataset):
    """Four samples {"x": [i]}; those in ``bad`` (default: sample 2) are a bad mask."""

    def __init__(self, bad: tuple[int, ...] = (2,)) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        if i in self.bad:
            raise DataError(BAD_MASK)
        return {"x": torch.tensor([i])}


def test_a_data_error_in_a_dataloader_worker_comes_back_as_itself():
    batches = iter(UserErrorDataLoader(_BadSample(), batch_size=2, num_workers=1))
    assert next(batches)["x"].tolist() == [[0], [1]]
    with pytest.raises(DataError) as caught:
        next(batches)
    assert str(caught.value) == BAD_MASK  # its own message, not torch's traceback text
    assert caught.value.where == "DataLoader worker 0, sample 2"


def test_without_workers_the_error_is_raised_where_it_happens():
    with pytest.raises(DataError) as caught:
        list(UserErrorDataLoader(_BadSample(), batch_size=4, num_workers=0))
    assert str(caught.value) == BAD_MASK and caught.value.where == ""


class _Broken(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        raise KeyError("a bug, not bad input")


def test_a_bug_in_a_worker_keeps_torchs_traceback():
    with pytest.raises(KeyError, match="Caught KeyError in DataLoader worker process 0"):
        next(iter(UserErrorDataLoader(_Broken(), batch_size=2, num_workers=1)))


def test_the_datamodules_loaders_carry_a_workers_error():
    from deconvnet.data.datamodules import WholeImageDataModule
    from deconvnet.training.exact_resume import ExactResume

    cfg = load_config(None, ["data.batch_size=2", "data.num_workers=1"])
    for resumable in (False, True):  # the DataModule's loader, and training's resumable one
        data = WholeImageDataModule(cfg)
        data.train_set = _BadSample(bad=(0, 1, 2, 3))  # shuffled: every sample is bad
        if resumable:
            ExactResume().install(data)
        with pytest.raises(DataError, match=r"^class mask /data/x\.png holds values \[37\]"):
            for _ in data.train_dataloader():
                pass


def test_cli_prints_a_dataloader_workers_data_error_as_one_line(monkeypatch, capsys):
    def train_reads_a_bad_sample(cfg, *args, **kwargs):
        for _ in UserErrorDataLoader(_BadSample(), batch_size=1, num_workers=1):
            pass

    monkeypatch.setattr("deconvnet.training.run.train", train_reads_a_bad_sample)
    assert main(["train", DEMO_STAGE1]) == 2
    assert one_error_line(capsys, "train") == f"deconvnet train: error: {BAD_MASK}"


def test_an_error_record_rebuilds_the_same_class_and_nothing_else():
    from deconvnet.config import ConfigError
    from deconvnet.training.callbacks import NonFiniteLossError

    for error in (DataError(BAD_MASK), ConfigError("optim.lr=-1"), NonFiniteLossError("nan at step 3")):
        record = ErrorRecord.from_json(ErrorRecord.of(error, "process 1").to_json())
        again = record.error()
        assert type(again) is type(error) and str(again) == str(error) and again.where == "process 1"
    # a class that is not a UserError, or not importable here, comes back as a plain UserError
    for kind in ("builtins.SystemExit", "os.system", "nowhere.Missing"):
        again = ErrorRecord(kind, "a message", "").error()
        assert type(again) is UserError and str(again) == "a message"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.lr=-0.1", "optim.lr=-0.1 is out of range: it must be > 0"),
        ("data.num_workers=-2", "data.num_workers=-2 is out of range: it must be >= 0"),
        ("trainer.precision=foo", "trainer.precision=foo is not one of the allowed values"),
    ],
)
def test_bad_values_are_one_line(override, expected, capsys):
    assert main(["train", DEMO_STAGE1, override]) == 2
    assert expected in one_error_line(capsys, "train")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_asked_for_on_a_machine_without_one_says_how_to_run_on_cpu(tmp_path, capsys):
    assert main(["train", str(REPO / "experiments/table1/stage1.yaml"), f"output_dir={tmp_path}/o"]) == 2
    line = one_error_line(capsys, "train")
    assert "trainer.accelerator=gpu but this machine has no CUDA GPU" in line
    assert "trainer.accelerator=cpu" in line
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.batch_size=1"], "raise data.batch_size to 2"),
        # 4 CPU processes: one line from the launching process, before any rank starts
        (
            ["data.batch_size=4", "trainer.devices=4", "trainer.strategy=ddp_spawn"],
            "raise data.batch_size to 8 or more or use fewer devices (trainer.devices)",
        ),
        (["data.batch_size=4", "data.per_device_batch_size=1"], "raise data.per_device_batch_size to 2"),
    ],
)
def test_fewer_than_two_windows_per_device_names_the_key_to_change(overrides, key, tmp_path, capsys):
    assert main(["train", DEMO_STAGE1, f"output_dir={tmp_path}/o", *overrides]) == 2
    assert key in one_error_line(capsys, "train")


@pytest.mark.parametrize(
    "model, differs",
    [
        ({"width": 0.0625, "input_size": 64}, "model.width=0.25 (checkpoint: 0.0625)"),
        ({"name": "fcn8s"}, "model.name=deconvnet (checkpoint: fcn8s)"),
    ],
)
def test_resume_from_a_checkpoint_of_another_network_is_one_line(
    model, differs, tiny_checkpoint_factory, tmp_path, capsys
):
    ckpt = tiny_checkpoint_factory(tmp_path / "other.ckpt", model.pop("name", "deconvnet"), **model)
    assert main(["train", DEMO_STAGE1, f"output_dir={tmp_path}/o", f"resume={ckpt}"]) == 2
    line = one_error_line(capsys, "train")
    assert f"cannot resume from {ckpt}" in line and differs in line and "resume=never" in line


def test_an_output_dir_that_cannot_exist_is_one_line(capsys):
    assert main(["train", DEMO_STAGE1, "output_dir=/proc/x"]) == 2
    assert "output_dir /proc/x: cannot be created" in one_error_line(capsys, "train")


def test_score_checks_it_can_write_before_reading_anything(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("scored before checking that results.csv can be written")

    monkeypatch.setattr("deconvnet.inference.score.score_folders", never)
    assert main(["score", "--pred", str(tmp_path), "--gt", str(tmp_path), "--out", "/proc/x"]) == 2
    assert "--out /proc/x" in one_error_line(capsys, "score")


def test_proposals_check_they_can_write_before_computing(synthetic_voc, tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("proposals computed before checking that the cache can be written")

    monkeypatch.setattr("deconvnet.data.proposals.precompute.compute_proposals", never)
    code = main(
        [
            "proposals",
            str(REPO / "experiments/table1/stage2.yaml"),
            f"data.root={synthetic_voc}",
            "data.train_split=train",
            "data.proposals.cache_dir=/proc/x/cache",
            "data.proposals.edge_model=null",
        ]
    )  # no fallback warning: one line on stderr
    assert code == 2
    assert "data.proposals.cache_dir /proc/x/cache: cannot be created" in one_error_line(capsys, "proposals")


def test_a_full_disk_met_while_writing_is_one_line_naming_the_file(monkeypatch, capsys):
    def disk_full(cfg, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/big/outputs/demo-eval/results.csv")

    monkeypatch.setattr("deconvnet.training.run.train", disk_full)
    assert main(["train", DEMO_STAGE1]) == 2
    line = one_error_line(capsys, "train")
    assert "/big/outputs/demo-eval/results.csv: the disk is full" in line and "run the same command again" in line


def test_more_gpus_than_the_machine_has_names_trainer_devices(monkeypatch):
    from deconvnet.config import ConfigError, load_config
    from deconvnet.runtime.hardware import check_hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ConfigError, match=r"trainer\.devices=4 but this machine has 2 CUDA GPU\(s\); set trainer\.devices=2"
    ):
        check_hardware(load_config(None, ["trainer.accelerator=gpu", "trainer.devices=4"]).trainer)
    check_hardware(load_config(None, ["trainer.accelerator=gpu", "trainer.devices=2"]).trainer)
