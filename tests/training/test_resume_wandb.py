"""Resume after an interrupted run (same step, optimiser state and W&B run), and what the
offline W&B run holds."""

import re

import pytest
import torch

from deconvnet.config import load_config
from deconvnet.runtime.wandb_setup import RUN_ID_FILE
from deconvnet.training.checkpoints import read_checkpoint
from deconvnet.training.run import train

from ..wandb_offline import read_offline_run
from .conftest import EXPERIMENTS, AtStep, Capture

pytestmark = pytest.mark.slow


def test_interrupted_run_resumes_where_it_stopped(tiny, tmp_path, wandb_flushed):
    overrides = tiny(
        "resumed",
        schedule__max_steps=4,
        logger__mode="offline",
        optim__name="sgd",
        optim__momentum=0.9,
        optim__lr=0.001,
    )
    recipe = EXPERIMENTS / "demo/stage1.yaml"

    def crash(trainer, pl_module):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_config(recipe, overrides), callbacks=[AtStep(3, crash)])
    out = tmp_path / "resumed"
    last = read_checkpoint(out / "checkpoints/last.ckpt")
    assert last["global_step"] == 2 and not (out / "checkpoints/final.ckpt").exists()
    run_id = (out / RUN_ID_FILE).read_text().strip()

    capture = Capture()
    final = train(load_config(recipe, overrides), callbacks=[capture])  # resume=auto
    assert capture.start["step"] == 2 and capture.end["step"] == 4
    assert read_checkpoint(final)["global_step"] == 4
    # the optimiser continues with the saved momentum buffers
    saved = last["optimizer_states"][0]["state"]
    restored = capture.start["optimizer"]["state"]
    assert saved.keys() == restored.keys() and len(saved) > 0
    for index, state in saved.items():
        assert torch.equal(state["momentum_buffer"], restored[index]["momentum_buffer"])
    saved_net = {k[len("net.") :]: v for k, v in last["state_dict"].items()}
    assert all(torch.equal(capture.start["net"][k], v) for k, v in saved_net.items())

    wandb_flushed()  # the run files are complete only once the W&B service has finished them
    # one W&B run, continued: both process lifetimes wrote under the same id
    assert (out / RUN_ID_FILE).read_text().strip() == run_id
    run_dirs = sorted((out / "wandb").glob("offline-run-*"))
    # (wandb adds "-1" to the folder when both lifetimes start within the same second)
    pattern = rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?"
    assert len(run_dirs) == 2 and all(re.fullmatch(pattern, d.name) for d in run_dirs)

    # what the resumed offline run holds: the resolved config, the revision, the metrics
    run = read_offline_run(run_dirs[-1])
    assert run["id"] == run_id
    assert run["config"]["optim"]["lr"] == 0.001 and run["config"]["name"] == "resumed"
    assert run["config"]["git_revision"]
    history = run["history"]
    train_steps = [h["trainer/global_step"] for h in history if "train/loss" in h]
    assert (
        train_steps
        and min(train_steps) >= 2
        and all(h["train/lr"] == pytest.approx(0.001) for h in history if "train/lr" in h)
    )
    validations = [h for h in history if "val/miou" in h]
    assert len(validations) == 1  # at step 4
    assert 0 <= validations[0]["val/pixel_accuracy"] <= 1
    assert "val/iou/background" in validations[0]
    samples = [h for h in history if "val/samples/count" in h]
    assert samples and samples[0]["val/samples/count"] == 2  # logger.log_images=2
    first = read_offline_run(run_dirs[0])
    assert any("val/miou" in h for h in first["history"])  # the step-2 validation, before the crash
