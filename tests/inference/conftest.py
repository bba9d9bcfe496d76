"""Hand-made scenes and oracle 'networks' for the inference tests.

A scene is an image whose colours say the class of every pixel (one flat colour per
class, background dark), and its ground truth with a void band (255) along every class
boundary, as VOC's annotations have. The oracle network reads the class back from the
colours, so anything that loses or displaces pixels on the way (cropping, pasting,
aggregation, scoring) shows up as IoU below 100%.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

NUM_CLASSES = 21
VOID = 255
# a flat colour per class, far apart; background is dark so zero padding reads as background
CLASS_COLOURS = np.array(
    [[20, 20, 20]] + [[(37 * c) % 200 + 55, (91 * c) % 200 + 55, (53 * c) % 200 + 55] for c in range(1, 21)],
    dtype=np.float32,
)


def make_scene(height: int, width: int, classes: list[int], seed: int, band: int = 3):
    """(image uint8 H x W x 3, label uint8 H x W): one rectangle per class on background,
    void (255) within ``band`` pixels of every rectangle edge."""
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    void = np.zeros((height, width), bool)
    taken = np.zeros((height, width), bool)
    for c in classes:
        for _ in range(200):  # rectangles that do not touch (band included), so none hides another
            h, w = rng.integers(height // 5, height // 3), rng.integers(width // 5, width // 3)
            y, x = rng.integers(0, height - h), rng.integers(0, width - w)
            if not taken[max(0, y - band):y + h + band, max(0, x - band):x + w + band].any():
                break
        else:
            raise ValueError(f"no room for {len(classes)} rectangles in {height}x{width}")
        taken[y:y + h, x:x + w] = True
        label[y:y + h, x:x + w] = c
        outer = np.zeros_like(void)
        outer[max(0, y - band):y + h + band, max(0, x - band):x + w + band] = True
        inner = np.zeros_like(void)
        inner[y + band:y + h - band, x + band:x + w - band] = True
        void |= outer & ~inner
    image = CLASS_COLOURS[label].round().astype(np.uint8)
    gt = np.where(void, VOID, label).astype(np.uint8)
    return image, gt


class ColourOracle(nn.Module):
    """A fake segmentation network: 0-255 RGB in, scores of the nearest class colour out
    (+10 for that class, -10 for the others)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.register_buffer("colours", torch.from_numpy(CLASS_COLOURS[:num_classes]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        dist = ((x[:, None] - self.colours[None, :, :, None, None]) ** 2).sum(2)  # B x C x H x W
        nearest = dist.argmin(1)
        onehot = torch.nn.functional.one_hot(nearest, self.colours.shape[0]).permute(0, 3, 1, 2)
        return onehot.float() * 20 - 10


class AlwaysAeroplane(nn.Module):
    """A fake network that says "aeroplane" (class 1) at every pixel of every window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], NUM_CLASSES, *x.shape[2:])
        out[:, 1] = 1
        return out


def eval_trainer(**kwargs) -> L.Trainer:
    """A quiet one-process CPU Trainer for ``trainer.test`` of an evaluator (``kwargs`` override)."""
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False,
                   use_distributed_sampler=False)
    return L.Trainer(**{**options, **kwargs})


class SceneDataset(Dataset):
    """Items in the format of WholeImageDataModule.eval_dataloader (before batching)."""

    def __init__(self, scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        image, label = self.scenes[i]
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "label": torch.from_numpy(label.astype(np.int64)), "id": f"img{i:03d}", "index": i}


def collate_one(items: list[dict]) -> dict:
    (item,) = items
    return {"image": item["image"][None], "label": item["label"][None], "id": [item["id"]],
            "index": torch.tensor([item["index"]])}


def scene_loader(scenes, sampler=None) -> DataLoader:
    return DataLoader(SceneDataset(scenes), batch_size=1, shuffle=False, sampler=sampler,
                      collate_fn=collate_one, num_workers=0)


@pytest.fixture
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
    """Five scenes of different sizes covering all 21 classes."""
    classes = list(range(1, 21))
    groups = [classes[0:4], classes[4:8], classes[8:12], classes[12:16], classes[16:20]]
    sizes = [(72, 96), (96, 80), (64, 64), (88, 100), (80, 72)]
    return [make_scene(h, w, g, seed=i) for i, ((h, w), g) in enumerate(zip(sizes, groups))]
