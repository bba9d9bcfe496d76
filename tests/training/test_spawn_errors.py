"""A ddp_spawn process's UserError reaches the launching process as itself (an ErrorRecord
file, deconvnet.runtime.spawn_errors), and the CLI prints it as one line."""

from __future__ import annotations

import pytest

from deconvnet.cli import main
from deconvnet.errors import DataError, ErrorRecord
from deconvnet.runtime.spawn_errors import UserErrorDDPStrategy, read_record, trainer_strategy

from ..test_error_lines import one_error_line
from .conftest import EXPERIMENTS


def test_strategies_that_start_their_own_processes_carry_user_errors():
    for name, start_method in (("ddp_spawn", "spawn"), ("ddp_fork", "fork")):
        strategy = trainer_strategy(name)
        assert isinstance(strategy, UserErrorDDPStrategy) and strategy.start_method == start_method
    spawn_unused = trainer_strategy("ddp_spawn_find_unused_parameters_true")
    assert spawn_unused._ddp_kwargs == {"find_unused_parameters": True}  # the registered settings kept
    for name in ("auto", "ddp", "single_device"):  # no process of ours to wait for
        assert trainer_strategy(name) == name


def test_the_failed_process_record_comes_first_then_any_other(tmp_path):
    assert read_record(tmp_path, 0) is None  # a crash that is not a UserError: torch's report stays
    other = ErrorRecord("deconvnet.errors.DataError", "image 7 is corrupt", "spawned process 1")
    (tmp_path / "1.json").write_text(other.to_json())
    assert read_record(tmp_path, 0) == other  # process 0 lost its peer because of process 1
    own = ErrorRecord("deconvnet.errors.UserError", "lower data.batch_size", "spawned process 0")
    (tmp_path / "0.json").write_text(own.to_json())
    (tmp_path / "2.json").write_text("half a reco")  # unreadable: skipped
    assert read_record(tmp_path, 0) == own and read_record(tmp_path, 2) == own
    assert isinstance(read_record(tmp_path, 1).error(), DataError)


@pytest.mark.slow
def test_cli_prints_a_spawned_process_user_error_as_one_line(tiny, capsys):
    # 95 training windows, 256 per process: each spawned process stops in train_dataloader,
    # after the launching process has checked everything it can check
    code = main(["train", str(EXPERIMENTS / "demo/stage1.yaml"), *tiny(
        "spawn", data__batch_size=512, trainer__devices=2, trainer__strategy="ddp_spawn")])
    assert code == 2
    line = one_error_line(capsys, "train")
    assert line.endswith("has 95 examples, fewer than one per-device batch (256); lower data.batch_size")
