"""Two processes (ddp_spawn on CPU, gloo): one W&B run, the global batch kept by per-device
batches and gradient accumulation, validation pixels counted exactly once."""

import pytest
import torch

from deconvnet.config import load_config
from deconvnet.data.datamodules import Stage1DataModule
from deconvnet.metrics import confusion_matrix, mean_iou, pixel_accuracy
from deconvnet.runtime.wandb_setup import RUN_ID_FILE
from deconvnet.training.checkpoints import load_network, read_checkpoint
from deconvnet.training.run import train

from ..wandb_offline import read_offline_run
from .conftest import EXPERIMENTS

pytestmark = pytest.mark.slow


def test_ddp_spawn_trains_with_accumulation_and_logs_once(tiny, tmp_path):
    cfg = load_config(EXPERIMENTS / "demo/stage1.yaml", tiny(
        "ddp", trainer__devices=2, trainer__strategy="ddp_spawn", logger__mode="offline",
        data__batch_size=8, data__per_device_batch_size=2,  # 2 per device x 2 devices x accumulate 2
        trainer__limit_val_batches=1.0,
    ))
    final = train(cfg)
    out = tmp_path / "ddp"
    last = read_checkpoint(out / "checkpoints/last.ckpt")
    assert read_checkpoint(final)["global_step"] == last["global_step"] == 2
    # each process consumed steps x accumulation batches
    progress = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    assert progress["completed"] == 2 * 2

    # one W&B run for the job, written by rank 0 only
    run_dirs = list((out / "wandb").glob("*run-*"))
    assert len(run_dirs) == 1
    run = read_offline_run(run_dirs[0])
    assert run["id"] == (out / RUN_ID_FILE).read_text().strip()
    history = run["history"]
    assert [h["trainer/global_step"] for h in history if "train/loss" in h] == [0, 1]
    validation = next(h for h in history if "val/pixel_accuracy" in h)

    # the validation at step 2 ran with last.ckpt's weights: one process over the whole split
    # must give the same numbers (no window counted twice or missed)
    net = load_network(out / "checkpoints/last.ckpt")
    data = Stage1DataModule(cfg)
    data.setup("validate")
    confusion = torch.zeros(21, 21, dtype=torch.int64)
    from deconvnet.models import InputNormalizer

    normalize = InputNormalizer(cfg.model.weights_style)
    with torch.no_grad():
        for batch in data.val_dataloader():
            prediction = net(normalize(batch["image"])).argmax(1)
            confusion += confusion_matrix(prediction, batch["label"], 21)
    assert validation["val/pixel_accuracy"] == pytest.approx(pixel_accuracy(confusion), abs=1e-6)
    assert validation["val/miou"] == pytest.approx(mean_iou(confusion), abs=1e-6)
