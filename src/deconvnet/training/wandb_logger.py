"""Sample predictions of a training run, logged to W&B as images with their masks.

The logger itself (mode, run id across resumes, one W&B run per job) is built by
:mod:`deconvnet.runtime.wandb_setup`, shared with evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from deconvnet.data.classes import IGNORE_INDEX
from deconvnet.runtime.wandb_setup import RUN_ID_FILE  # noqa: F401 - kept importable here


def log_segmentation_samples(
    logger: Any,
    key: str,
    samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    class_names: Sequence[str],
    step: int,
) -> None:
    """Log images with ground-truth and predicted masks (W&B's interactive mask overlay).

    ``samples``: (uint8 3 x H x W RGB image, H x W label, H x W prediction) triples.
    Does nothing for loggers other than W&B.
    """
    if not isinstance(logger, WandbLogger) or not samples:
        return
    names = {i: name for i, name in enumerate(class_names)}
    names[IGNORE_INDEX] = "void"
    pictures, masks = [], []
    for image, label, pred in samples:
        pictures.append(image.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        masks.append({
            "ground_truth": {"mask_data": label.cpu().numpy().astype(np.uint8), "class_labels": names},
            "prediction": {"mask_data": pred.cpu().numpy().astype(np.uint8), "class_labels": names},
        })
    logger.log_image(key=key, images=pictures, step=step, masks=masks)
