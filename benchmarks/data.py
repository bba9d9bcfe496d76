"""Data-loading throughput of the stage-1 and stage-2 training pipelines against a baseline.

    python benchmarks/data.py [--images 100] [--examples 200] [--root DIR] [--device cuda]

Writes a synthetic VOC set at VOC image sizes (longer side 500) into a temporary folder
(or uses --root), builds the stage-1 and stage-2 example lists and the decoded store once,
and times, in one process on one core (num_workers=0, one thread: i.e. per loader worker),
loading the same examples in batches of 16 with

* baseline: torchvision.datasets.VOCSegmentation + torchvision.transforms.v2 doing the
  same work (pad with 0 / 255, crop the window, resize to 250 bilinear / nearest,
  random 224 crop + horizontal flip), reading SegmentationObject for stage 1 as we do;
* decode: Stage1Dataset / Stage2Dataset on VOCSegmentationIndex (JPEG + PNG decoded per
  window, one cv2 affine warp for crop + pad + resize to 250, random crop + flip);
* store_workers: the same datasets on the decoded store (data.store=true, pipeline=workers);
* store_device: window descriptions (data.pipeline=device) cut in one batched call per
  batch from the store's tensors on ``--device`` (default cpu: the memory maps themselves).

Ours are drawn as the training loader draws them: each sample with its own seed
(``SeededSamples``, what exact resume costs).

Each is timed in 5 rounds (--repeats), alternately (fair under load); the best round counts. Prints one
JSON object: windows per second for each and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from deconvnet.config import load_config
from deconvnet.data.datasets import InstanceIndex, Stage1Dataset, Stage2Dataset
from deconvnet.data.device_windows import DeviceWindowSource, WindowSpecs, cut_batch
from deconvnet.data.proposals import load_proposals
from deconvnet.data.sample_seeds import SeededSamples, sample_seed
from deconvnet.data.store import open_store
from deconvnet.data.synthetic import generate
from deconvnet.data.voc import VOCSegmentationIndex


class TorchvisionBaseline(Dataset):
    """The same examples, loaded the way a torchvision user would write it."""

    def __init__(self, root: Path, split: str, table) -> None:
        from torchvision.datasets import VOCSegmentation
        from torchvision.transforms import v2

        self.voc = VOCSegmentation(str(root), year="2012", image_set=split)
        self.objects_dir = Path(root) / "VOCdevkit" / "VOC2012" / "SegmentationObject"
        self.table = table
        self.augment = v2.Compose([v2.RandomCrop(224), v2.RandomHorizontalFlip(0.5)])

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, k: int):
        from torchvision import tv_tensors
        from torchvision.transforms import v2
        from torchvision.transforms.v2 import functional as F

        i = int(self.table.image_index[k])
        pil_image, pil_target = self.voc[i]
        image = tv_tensors.Image(F.pil_to_tensor(pil_image))
        label = torch.from_numpy(np.array(pil_target, dtype=np.uint8))
        position = int(self.table.instance[k])
        if position >= 0:  # stage 1: only the instance keeps its class
            name = Path(self.voc.masks[i]).name
            objects = torch.from_numpy(np.array(Image.open(self.objects_dir / name), dtype=np.uint8))
            ids = [v for v in torch.unique(objects).tolist() if v not in (0, 255)]
            mask = objects == ids[position]
            class_id = int(torch.mode(label[mask]).values)
            label = torch.where(label == 255, 255, 0).to(torch.uint8)
            label[mask] = class_id
        label = tv_tensors.Mask(label[None])
        x1, y1, x2, y2 = (round(float(v)) for v in self.table.boxes[k])
        _, height, width = image.shape
        pad = [max(0, -x1), max(0, -y1), max(0, x2 - width), max(0, y2 - height)]
        image = F.pad(image, pad, fill=0)
        label = F.pad(label, pad, fill=255)
        top, left = y1 + pad[1], x1 + pad[0]
        image = F.crop(image, top, left, y2 - y1, x2 - x1)
        label = F.crop(label, top, left, y2 - y1, x2 - x1)
        image = F.resize(image, [250, 250], interpolation=v2.InterpolationMode.BILINEAR, antialias=False)
        label = F.resize(label, [250, 250], interpolation=v2.InterpolationMode.NEAREST)
        image, label = self.augment(image, label)
        return {"image": image.as_subclass(torch.Tensor), "label": label[0].as_subclass(torch.Tensor).long()}


def _rate(dataset: Dataset, rows: np.ndarray, device: torch.device | None = None) -> float:
    """Windows per second loading ``rows`` with a num_workers=0 DataLoader; window
    descriptions (``WindowSpecs``) are moved to ``device`` and cut there, as training does.
    Our datasets are drawn as the training loader draws them, each sample with its own seed
    (``SeededSamples``); the baseline is loaded as a torchvision user would."""
    if isinstance(dataset, TorchvisionBaseline):
        loader = DataLoader(torch.utils.data.Subset(dataset, rows.tolist()), batch_size=16, num_workers=0)
    else:
        keys = [(int(row), sample_seed(0, 0, int(row))) for row in rows]
        loader = DataLoader(SeededSamples(dataset), batch_size=16, sampler=keys, num_workers=0)
    sources = {dataset.source: DeviceWindowSource(dataset.reader, dataset.crop_size)} \
        if isinstance(dataset, WindowSpecs) else None
    if sources is not None:  # the store made resident on the device once, before timing
        sources[dataset.source].tensors(device)
    start = time.perf_counter()
    for batch in loader:
        if sources is not None:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            batch = cut_batch(batch, sources)
        assert batch["image"].dtype == torch.uint8 and batch["label"].dtype == torch.int64
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(rows) / (time.perf_counter() - start)


def best_rates(pipelines: dict[str, tuple[Dataset, torch.device | None]], rows: np.ndarray,
               repeats: int = 3) -> dict[str, float]:
    """Best rate of each pipeline over ``repeats`` rounds, measured alternately."""
    best = dict.fromkeys(pipelines, 0.0)
    for _ in range(repeats):
        for name, (dataset, device) in pipelines.items():
            best[name] = max(best[name], _rate(dataset, rows, device))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="synthetic images (default 100)")
    parser.add_argument("--examples", type=int, default=200, help="examples timed per pipeline and round")
    parser.add_argument("--root", default=None, help="existing VOC root (default: a temporary synthetic set)")
    parser.add_argument("--device", default="cpu", help="where store_device cuts (cpu | cuda)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the best of each counts (default 5)")
    args = parser.parse_args()

    torch.set_num_threads(1)  # one loader worker = one core
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if not args.root:
            generate(root, num_images=args.images, seed=0)
        cfg = load_config(None, [f"data.root={root}", "data.train_split=train",
                                 f"data.proposals.cache_dir={Path(tmp) / 'proposals'}"])
        reader = VOCSegmentationIndex(root, "train")
        stored = open_store(reader, Path(tmp) / "cache")
        index = InstanceIndex.build(reader)
        proposals = load_proposals(cfg, "train", reader=reader)
        stage1 = {"decode": Stage1Dataset(reader, index, balance=False),
                  "store_workers": Stage1Dataset(stored, index, balance=False)}
        stage2 = {"decode": Stage2Dataset(reader, proposals, index, balance=False),
                  "store_workers": Stage2Dataset(stored, proposals, index, balance=False)}
        rng = np.random.default_rng(0)
        result = {"images": len(reader), "image_size": "VOC-like, longer side 500", "num_workers": 0,
                  "threads": 1, "device": str(device), "unit": "windows/s per core (one loader worker)"}
        proposal_start = len(stage2["decode"]) - len(stage2["decode"].proposal_table)
        for name, sets, rows in (("stage1", stage1, np.arange(len(stage1["decode"]))),
                                 ("stage2_proposals", stage2, np.arange(proposal_start, len(stage2["decode"])))):
            rows = rng.choice(rows, size=min(args.examples, len(rows)), replace=False)
            pipelines = {
                "torchvision_baseline": (TorchvisionBaseline(root, "train", sets["decode"].table), None),
                "decode": (sets["decode"], None),
                "store_workers": (sets["store_workers"], None),
                "store_device": (WindowSpecs(sets["store_workers"], "train"), device),
            }
            rates = best_rates(pipelines, rows, args.repeats)
            base = rates["torchvision_baseline"]
            result[name] = {"examples": len(rows), **{k: round(v, 1) for k, v in rates.items()},
                            "ratio_to_baseline": {k: round(v / base, 2) for k, v in rates.items()
                                                  if k != "torchvision_baseline"}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
