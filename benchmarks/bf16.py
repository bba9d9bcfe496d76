"""bf16 autocast against fp32 on a trained DeconvNet and real validation windows; prints JSON.

``benchmarks/gpu.py`` measures the bf16 logit error of a randomly initialised network, where
every max-pooling switch is a coin toss. This measures what training and evaluation see: a
trained checkpoint (``--checkpoint``), the validation windows of a recipe (``--config``: its
``data`` section, e.g. the demo's synthetic set), batches of ``--batch`` windows, BatchNorm
in training mode (batch statistics, as in a bf16-mixed training step) and in eval mode (as
in evaluation). Per mode: relative L2 error of the logits, the share of pixels whose argmax
agrees, and the window mIoU (void ignored) of fp32 and of bf16 against the labels.

    PYTHONPATH=src python benchmarks/bf16.py --config experiments/demo/stage2.yaml \\
        --checkpoint outputs/demo-stage2/checkpoints/final.ckpt
"""

from __future__ import annotations

import argparse
import json

import torch

from deconvnet.config import load_config
from deconvnet.data.datamodules import Stage1DataModule
from deconvnet.metrics import confusion_matrix, mean_iou
from deconvnet.models import InputNormalizer
from deconvnet.runtime.checkpoints import load_network


def window_batches(cfg, batch: int, limit: int):
    """Up to ``limit`` validation windows of ``cfg`` as (float 0-255 images, labels) batches."""
    data = Stage1DataModule(cfg)
    data.setup("validate")
    images, labels = [], []
    for k in range(min(limit, len(data.val_set))):
        sample = data.val_set[k]
        images.append(sample["image"])
        labels.append(sample["label"])
    images, labels = torch.stack(images).float(), torch.stack(labels).long()
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(images), batch)]


def measure(network: torch.nn.Module, batches, num_classes: int, train_mode: bool) -> dict:
    network.train(train_mode)
    logits = {"fp32": [], "bf16": []}
    with torch.no_grad():
        for images, _ in batches:
            logits["fp32"].append(network(images).float())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits["bf16"].append(network(images).float())
    fp32, bf16 = torch.cat(logits["fp32"]), torch.cat(logits["bf16"])
    labels = torch.cat([labels for _, labels in batches])
    result = {
        "relative_l2": round(((bf16 - fp32).norm() / fp32.norm()).item(), 4),
        "argmax_agreement": round((bf16.argmax(1) == fp32.argmax(1)).float().mean().item(), 4),
    }
    for name, scores in (("fp32", fp32), ("bf16", bf16)):
        matrix = confusion_matrix(scores.argmax(1), labels, num_classes)
        result[f"miou_{name}"] = round(100 * float(mean_iou(matrix)), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="recipe whose data section gives the val windows")
    parser.add_argument("--checkpoint", required=True, help="a trained DeconvNet checkpoint")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--windows", type=int, default=256, help="at most this many val windows")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = load_config(args.config, ["data.store=false"])
    net = load_network(args.checkpoint, expect="deconvnet")
    network = torch.nn.Sequential(InputNormalizer(net.model_config.get("weights_style", "torchvision")), net)
    batches = window_batches(cfg, args.batch, args.windows)
    report = {"checkpoint": args.checkpoint, "windows": sum(len(b[0]) for b in batches), "batch": args.batch,
              "model": {k: net.model_config.get(k) for k in ("width", "input_size")}}
    for mode, train_mode in (("train_mode_bn", True), ("eval_mode_bn", False)):
        report[mode] = measure(network, batches, int(cfg.model.num_classes), train_mode)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
