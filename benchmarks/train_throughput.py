"""Stage-1 training throughput of DeconvNet: fp32 against bf16 autocast + channels_last.

    PYTHONPATH=src python benchmarks/train_throughput.py [--batch 64] [--size 224] [--steps 30]

Times the training step the LightningModule runs (uint8 batch -> InputNormalizer -> DeconvNet
-> cross-entropy over valid pixels -> backward -> SGD with the paper's parameter groups) on
random data already on the device, so the number is the network's ceiling, not the loader's.
Needs torch alone (no Lightning, OmegaConf or W&B), so it runs on a bare GPU machine.

Prints one JSON object: per mode, images per second and peak device memory; and the device.
The paper's 60,000 iterations x 64 windows take 3.84M images: at 1,500 images/s, 43 minutes.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from deconvnet.models import DeconvNet, InputNormalizer
from deconvnet.training.losses import segmentation_loss
from deconvnet.training.optim import build_optimizer

PAPER_OPTIM = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
               "bias_lr_factor": 2.0, "bias_weight_decay": 0.0}


def measure(args: argparse.Namespace, bf16: bool, channels_last: bool) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = DeconvNet(num_classes=21, input_size=args.size, width=args.width).to(device)
    normalize = InputNormalizer("torchvision").to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(net, PAPER_OPTIM)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 21, (args.batch, args.size, args.size), device=device)
    labels[:, :8] = 255

    def step() -> None:
        x = normalize(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = segmentation_loss(logits, labels, "valid")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
    return {"images_per_s": round(args.batch * args.steps / seconds, 1), "peak_memory_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    results = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "batch": args.batch, "size": args.size, "width": args.width,
        "fp32": measure(args, bf16=False, channels_last=False),
        "bf16_channels_last": measure(args, bf16=True, channels_last=True),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
