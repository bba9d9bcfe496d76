"""A training run's lifecycle (#13 items 1, 2, 3, 6): killed at any moment, rerun, run twice
at once, rerun with another config: the folder ends complete and coherent or the run stops
at once with one line, and nothing already written is replaced by a run that then fails.

Kills are real: a child process trains and SIGKILLs itself at the chosen point."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deconvnet.cli import main
from deconvnet.config import load_config

from .conftest import EXPERIMENTS

RECIPE = EXPERIMENTS / "demo" / "stage1.yaml"
SRC = Path(__file__).resolve().parents[2] / "src"


def _run_child(script: str, overrides: list[str]) -> subprocess.CompletedProcess:
    """Run ``script`` (which sees RECIPE and OVERRIDES) in a fresh Python process."""
    # one intra-op thread, as the tests' own process (tests/training/conftest.py): float sums
    # in another order would differ in their last bits
    code = (f"import torch\ntorch.set_num_threads(1)\nRECIPE = {str(RECIPE)!r}\n"
            f"OVERRIDES = {overrides!r}\n" + textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)


def _sleeper() -> subprocess.Popen:
    """A live process of this host, to stand for a run that holds a lock."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _fake_owner(lock: Path, pid: int) -> None:
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "what": "train run"}))


@pytest.mark.slow
def test_a_run_killed_between_its_last_step_and_final_ckpt_is_finished_by_the_rerun(tiny, tmp_path):
    """#13.1: killed during precise BN (after last.ckpt at max_steps, before final.ckpt)."""
    overrides = tiny("killed")
    child = _run_child("""
        import os, signal
        import deconvnet.training.callbacks as callbacks
        from deconvnet.config import load_config
        from deconvnet.training.run import train

        def killed(*args, **kwargs):  # kill -9 in the middle of precise BN
            os.kill(os.getpid(), signal.SIGKILL)

        callbacks.recompute_batchnorm_statistics = killed
        train(load_config(RECIPE, OVERRIDES))
    """, overrides)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    out = tmp_path / "killed"
    last = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2 and not (out / "checkpoints/final.ckpt").exists()
    assert not (out / ".lock").exists() or main(["train", str(RECIPE), *overrides]) == 0

    assert main(["train", str(RECIPE), *overrides]) == 0
    final = torch.load(out / "checkpoints/final.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 2 and "optimizer_states" not in final
    for key, value in final["state_dict"].items():  # the weights are last.ckpt's; BN re-estimated
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, last["state_dict"][key]), key
    bn = [k for k in final["state_dict"] if k.endswith("running_var")]
    assert bn and any(not torch.equal(final["state_dict"][k], last["state_dict"][k]) for k in bn)
    assert json.loads((out / "complete.json").read_text())["step"] == 2
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_complete_only_when_the_record_matches_the_config_asked_for(tiny, tmp_path, capsys):
    """#13.3: a 2-step run is not a 4-step run; the pipeline asks the same question."""
    from deconvnet.pipeline import _trained

    assert main(["train", str(RECIPE), *tiny("short")]) == 0
    out = tmp_path / "short"
    assert _trained(load_config(RECIPE, tiny("short")))
    longer = tiny("short", schedule__max_steps=4, schedule__val_every_n_steps=2)
    assert not _trained(load_config(RECIPE, longer))  # final.ckpt exists, but of 2 steps
    assert main(["train", str(RECIPE), *longer]) == 0  # continues from step 2
    final = torch.load(out / "checkpoints/final.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 4 and _trained(load_config(RECIPE, longer))


@pytest.mark.slow
def test_a_different_config_in_an_existing_folder_is_refused_and_records_are_kept(tiny, tmp_path, capsys):
    """#13.3: config.yaml used to be rewritten before the config or checkpoint was accepted."""
    assert main(["train", str(RECIPE), *tiny("kept")]) == 0
    out = tmp_path / "kept"
    records = {name: (out / name).read_bytes() for name in ("config.yaml", "complete.json")}
    checkpoint = (out / "checkpoints/final.ckpt").read_bytes()
    capsys.readouterr()

    # another network in the same folder (FCN-8s recipe): refused, one line, keys named
    fcn = tiny("kept", window=False)
    assert main(["train", str(EXPERIMENTS / "demo" / "fcn8s.yaml"), *fcn]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err
    assert "model.name" in err and "resume=never" in err
    # another learning rate: refused too
    assert main(["train", str(RECIPE), *tiny("kept", optim__lr=0.1)]) == 2
    assert "optim.lr: 0.001 -> 0.1" in capsys.readouterr().err
    for name, content in records.items():
        assert (out / name).read_bytes() == content, name
    assert (out / "checkpoints/final.ckpt").read_bytes() == checkpoint

    # resume=never starts afresh with the new config
    assert main(["train", str(RECIPE), *tiny("kept", optim__lr=0.01, resume="never")]) == 0
    assert "lr: 0.01" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_resuming_another_models_checkpoint_writes_nothing(tiny, tmp_path, tiny_checkpoint_factory, capsys):
    """#13.3: a failed resume of another model left its config.yaml behind."""
    other = tiny_checkpoint_factory(tmp_path / "fcn.ckpt", "fcn8s")
    assert main(["train", str(RECIPE), *tiny("fresh", resume=other)]) == 2
    assert "fcn8s" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "config.yaml").exists()


def test_a_second_run_on_a_locked_folder_stops_at_once_naming_the_pid(tiny, tmp_path, capsys):
    """#13.2: two runs on one output_dir both ran to the end, mixing their files."""
    out = tmp_path / "busy"
    owner = _sleeper()
    try:
        _fake_owner(out / ".lock", owner.pid)
        assert main(["train", str(RECIPE), *tiny("busy")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and f"pid {owner.pid}" in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        owner.kill()
        owner.wait()


def test_a_lock_left_by_a_killed_run_is_stale(tmp_path):
    from deconvnet.runtime.lock import FolderLock

    dead = _sleeper()
    dead.kill()
    dead.wait()
    _fake_owner(tmp_path / ".lock", dead.pid)
    with FolderLock(tmp_path, "train run"):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


@pytest.mark.slow
def test_temporary_files_of_killed_writers_are_removed_by_the_next_run(tiny, tmp_path):
    """#13.6: interrupted checkpoint writes left .tmp files that reruns never removed."""
    dead = _sleeper()
    dead.kill()
    dead.wait()
    ckpt = tmp_path / "tidy" / "checkpoints"
    ckpt.mkdir(parents=True)
    stale = ckpt / f".last.ckpt.{dead.pid}.k3j9x2.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = ckpt / f".final.ckpt.{os.getpid()}.a8d7c6.tmp"  # a writer still at work: kept
    live.write_bytes(b"being written")
    assert main(["train", str(RECIPE), *tiny("tidy")]) == 0
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(["final.ckpt", "last.ckpt", live.name])


EPOCH_BATCHES = 23  # the tiny stage-1 run: 95 training windows in batches of 4, the last dropped


@pytest.mark.slow
@pytest.mark.parametrize(("saved_at", "workers"), [(2, 0), (EPOCH_BATCHES, 0), (2, 2)],
                         ids=["mid-epoch", "epoch-end", "mid-epoch-2-workers"])
def test_kill_and_resume_gives_the_weights_of_an_uninterrupted_run(tiny, tmp_path, saved_at, workers):
    """#13.5: a killed and resumed run ended up to 10.7 away from an uninterrupted one (the
    loader restarted its epoch with a new shuffle; the random generators were not restored).
    Also from a checkpoint written after an epoch's last batch: no batch of that epoch is
    left, and the next epoch's loader draws its seeds from the restored generators. And with
    loader workers, against a run without: every sample draws its crop from its own seed."""
    common = dict(schedule__max_steps=saved_at + 4, schedule__val_every_n_steps=saved_at, optim__lr=0.01)
    straight = tiny("straight", **common)
    assert main(["train", str(RECIPE), *straight]) == 0

    resumed = tiny("resumed", data__num_workers=workers, **common)
    child = _run_child(f"""
        import os, signal
        from lightning.pytorch.callbacks import Callback
        from deconvnet.config import load_config
        from deconvnet.training.run import train

        class KillAfterTheCheckpoint(Callback):  # kill -9 before the step after last.ckpt
            def on_train_batch_start(self, trainer, *args):
                if trainer.global_step == {saved_at + 1}:
                    os.kill(os.getpid(), signal.SIGKILL)

        train(load_config(RECIPE, OVERRIDES), callbacks=[KillAfterTheCheckpoint()])
    """, resumed)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    out = tmp_path / "resumed"
    last = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == saved_at and not (out / "checkpoints/final.ckpt").exists()
    assert last["callbacks"]["ExactResume"]["batches_done"] == saved_at  # all of epoch 0, or 2 batches
    assert main(["train", str(RECIPE), *resumed]) == 0

    for name in ("last.ckpt", "final.ckpt"):
        a = torch.load(tmp_path / "straight/checkpoints" / name, map_location="cpu", weights_only=True)
        b = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert a["global_step"] == b["global_step"] == saved_at + 4
        assert a["epoch"] == b["epoch"]  # the same epoch count (the shuffle of a DDP run follows it)
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), f"{name}: {key} differs"


@pytest.mark.slow
def test_a_training_run_on_other_data_is_noticed(tiny, synthetic_voc, tmp_path, capsys):
    """#13.8: the demo silently reused a stage-1 network trained on another synthetic set."""
    import shutil

    from deconvnet.pipeline import _trained

    assert main(["train", str(RECIPE), *tiny("data")]) == 0
    other = tmp_path / "other-voc"
    shutil.copytree(synthetic_voc, other)
    same = tiny("data", data__root=other)
    assert _trained(load_config(RECIPE, same))  # the same files elsewhere: the same data
    image = next((other / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")  # one image is not the same file any more
    assert not _trained(load_config(RECIPE, same))
    capsys.readouterr()
    assert main(["train", str(RECIPE), *same]) == 2
    err = capsys.readouterr().err
    assert "other data" in err and "resume=never" in err
