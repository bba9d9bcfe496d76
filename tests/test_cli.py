"""Command-line parsing: options anywhere, user-facing logging, third-party noise filtered."""

from __future__ import annotations

import logging
import warnings

import pytest

from deconvnet import cli


@pytest.fixture
def pipeline_calls(monkeypatch):
    """run_pipeline replaced by a recorder: (experiment, overrides, steps) of each call."""
    import deconvnet.pipeline

    calls = []
    def record(experiment, overrides, only):
        calls.append((experiment, overrides, only))

    monkeypatch.setattr(deconvnet.pipeline, "run_pipeline", record)
    return calls


@pytest.mark.parametrize("argv", [
    ["pipeline", "--steps", "stage1,eval", "EXP", "a=1", "b=2"],  # before the folder
    ["pipeline", "EXP", "--steps", "stage1,eval", "a=1", "b=2"],  # right after the folder
    ["pipeline", "EXP", "a=1", "--steps", "stage1,eval", "b=2"],  # between the overrides
    ["pipeline", "EXP", "a=1", "b=2", "--steps", "stage1,eval"],  # at the end
])
def test_pipeline_steps_anywhere_keeps_the_overrides_in_order(pipeline_calls, argv):
    assert cli.main(argv) == 0
    assert pipeline_calls == [("EXP", ["a=1", "b=2"], ["stage1", "eval"])]


def test_pipeline_without_steps_and_unknown_options(pipeline_calls):
    assert cli.main(["pipeline", "EXP", "a=1"]) == 0
    assert pipeline_calls == [("EXP", ["a=1"], None)]
    with pytest.raises(SystemExit) as exit_info:  # an unknown option is still an error
        cli.main(["pipeline", "EXP", "--bogus", "a=1"])
    assert exit_info.value.code == 2 and len(pipeline_calls) == 1


def test_package_info_messages_reach_stdout_as_plain_lines(pipeline_calls, capsys):
    cli.main(["pipeline", "EXP"])  # the CLI sets up logging at its start
    logging.getLogger("deconvnet.some.module").info("proposals val: 7 images")
    logging.getLogger("deconvnet.some.module").debug("not for the user")
    assert capsys.readouterr().out == "proposals val: 7 images\n"


def _lightning_lines(message: str) -> list[str]:
    """What Lightning's rank-zero logger lets through for one info message."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        rank_zero_info(message)
    finally:
        logger.removeHandler(handler)
    return seen


def test_lightning_tips_and_the_leafspec_warning_are_silenced(pipeline_calls):
    from torch.utils._pytree import LeafSpec

    tip = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        # an earlier main() in this process added it
        logging.getLogger(name).removeFilter(cli._drop_lightning_noise)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _lightning_lines(tip) == [tip] and not caught  # noisy before the CLI starts
        LeafSpec()
        assert len(caught) == 1 and "LeafSpec" in str(caught[0].message)
        cli.main(["pipeline", "EXP"])
        assert _lightning_lines(tip) == []
        assert _lightning_lines("GPU available: False") == ["GPU available: False"]  # the rest
        LeafSpec()
        assert len(caught) == 1


def test_package_messages_are_printed_once_even_after_a_bare_root_warning(capsys):
    """A library's logging.warning() on the root logger installs a default root handler
    (logging.basicConfig) when the root has none; ours would then print twice."""
    import logging

    from deconvnet.runtime.log_setup import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        setup_logging()
        logging.warning("a library's bare root warning")
        logging.getLogger("deconvnet.some.module").info("stage 1 done")
        printed = capsys.readouterr()
        assert (printed.out + printed.err).count("stage 1 done") == 1
    finally:
        root.handlers[:] = saved
