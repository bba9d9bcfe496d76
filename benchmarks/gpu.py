"""One GPU measurement of the whole recipe's hot paths; prints one JSON object.

    PYTHONPATH=src python benchmarks/gpu.py                 # on a GPU machine, < 5 minutes
    PYTHONPATH=src python benchmarks/gpu.py --device cpu --tiny   # a quick check of the script

Needs only torch (and, where importable, torchvision, OpenCV and pydensecrf): no omegaconf,
albumentations, wandb or Lightning. Measures, on synthetic tensors:

* ``train``: stage-1 training steps of the paper's DeconvNet (224 x 224 windows, batch 64,
  SGD, cross-entropy with void 255) for fp32 and bf16 autocast, each with and without
  channels_last and (``--compile``, default on CUDA) torch.compile: windows/s and peak memory;
* ``bf16_logit_error``: relative error of bf16-autocast logits against fp32 (train-mode
  BatchNorm, batch 64), with and without fc6/fc7 kept in fp32;
* ``device_windows``: the device input pipeline (``data.pipeline=device``): windows/s of
  cutting batches of 64 windows (250 -> random 224 crop + flip, labels nearest) from a
  store resident on the device;
* ``eval_windows``: instance-wise evaluation, proposal windows/s (crop + forward + paste
  back) with 50 proposals on a 375 x 500 image;
* ``crf``: images/s of the host CRF pool (pydensecrf; skipped when it is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from deconvnet.models import DeconvNet, InputNormalizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _timed(step, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _train_variant(args, device: torch.device, images: torch.Tensor, labels: torch.Tensor,
                   bf16: bool, channels_last: bool, compiled: bool) -> dict:
    """Windows/s (and peak memory) of training steps with one precision / layout / compile."""
    torch.manual_seed(0)
    net = DeconvNet(input_size=args.input_size, width=args.width).to(device).train()
    normalizer = InputNormalizer("torchvision").to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if compiled else net
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def step():
        x = normalizer(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    entry = {"precision": "bf16-mixed" if bf16 else "fp32", "channels_last": channels_last,
             "compile": compiled}
    try:
        start = time.perf_counter()
        seconds = _timed(step, device, args.warmup, args.steps)
        entry.update(windows_per_s=round(images.shape[0] / seconds, 1),
                     wall_s=round(time.perf_counter() - start, 1))
        if device.type == "cuda":
            entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    except Exception as err:  # one failing variant (e.g. compile) must not hide the others
        entry["error"] = f"{type(err).__name__}: {str(err)[:200]}"
    return entry


def bench_train(args, device: torch.device) -> list[dict]:
    """Windows/s of stage-1 training steps for each precision / layout / compile choice."""
    size, batch = args.input_size, args.batch
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 21, (batch, size, size), device=device)
    labels[:, :8] = 255
    variants = [(bf16, cl, comp) for comp in ((False, True) if args.compile else (False,))
                for bf16 in (False, True) for cl in (False, True)]
    results = []
    for bf16, channels_last, compiled in variants:
        results.append(_train_variant(args, device, images, labels, bf16, channels_last, compiled))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


@torch.no_grad()
def bench_bf16_error(args, device: torch.device) -> dict:
    """Relative L2 error of bf16-autocast logits against fp32 (train-mode BN statistics)."""
    torch.manual_seed(0)
    net = DeconvNet(input_size=args.input_size, width=args.width).to(device).train()
    x = (torch.rand(args.batch, 3, args.input_size, args.input_size, device=device) - 0.45) / 0.225
    reference = net(x).float()

    class Fp32(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            with torch.autocast(device.type, enabled=False):
                return self.inner(x.float())

    result = {}
    for name, island in (("bf16", ()), ("bf16_fc6_fc7_fp32", ("fc6", "fc7"))):
        saved = {n: getattr(net, n) for n in island}
        for n in island:
            setattr(net, n, Fp32(saved[n]))
        with _autocast(device, True):
            out = net(x).float()
        for n in island:
            setattr(net, n, saved[n])
        result[name] = {"relative_l2": round(((out - reference).norm() / reference.norm()).item(), 4),
                        "argmax_agreement": round((out.argmax(1) == reference.argmax(1)).float().mean().item(), 4)}
    return result


def bench_device_windows(args, device: torch.device) -> dict:
    """Windows/s of the device input pipeline's batched cut (store resident on the device)."""
    from deconvnet.data.device_windows import cut_windows

    rng = np.random.default_rng(0)
    num_images = args.store_images
    sizes = torch.from_numpy(np.stack([rng.integers(300, 376, num_images), rng.integers(400, 501, num_images)], 1))
    pixels = (sizes[:, 0] * sizes[:, 1]).long()
    mask_offsets = torch.cat([torch.zeros(1, dtype=torch.long), pixels.cumsum(0)])
    store = {
        "images": torch.randint(0, 256, (int(mask_offsets[-1]) * 3,), dtype=torch.uint8, device=device),
        "class": torch.randint(0, 21, (int(mask_offsets[-1]),), dtype=torch.uint8, device=device),
        "object": torch.randint(0, 4, (int(mask_offsets[-1]),), dtype=torch.uint8, device=device),
        "image_offsets": (mask_offsets * 3).to(device), "mask_offsets": mask_offsets.to(device),
        "sizes": sizes.long().to(device),
    }
    batch, window, crop = args.batch, args.window_size, args.input_size

    def make_batch() -> dict:
        index = torch.randint(0, num_images, (batch,))
        h, w = sizes[index, 0].float(), sizes[index, 1].float()
        side = torch.rand(batch) * 300 + 60
        cx, cy = torch.rand(batch) * w, torch.rand(batch) * h
        return {"window_image": index.to(device),
                "window_box": torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1).to(device),
                "window_size": torch.full((batch,), window, device=device),
                "window_crop": torch.randint(0, window - crop + 1, (batch, 2), device=device),
                "window_flip": (torch.rand(batch) < 0.5).to(device),
                "window_instance": torch.randint(-1, 3, (batch,), device=device),
                "window_class": torch.randint(1, 21, (batch,), device=device)}

    batches = [make_batch() for _ in range(4)]
    counter = iter(range(10**9))
    seconds = _timed(lambda: cut_windows(store, batches[next(counter) % 4], crop), device, 2, args.steps)
    return {"batch": batch, "window_size": window, "crop_size": crop, "store_images": num_images,
            "windows_per_s": round(batch / seconds, 1)}


@torch.no_grad()
def bench_eval_windows(args, device: torch.device) -> dict:
    """Proposal windows/s of instance-wise inference (crop, forward, paste back)."""
    from deconvnet.inference.instance import instance_scores

    torch.manual_seed(0)
    net = DeconvNet(input_size=args.input_size, width=args.width).to(device).eval()
    normalizer = InputNormalizer("torchvision").to(device)
    image = torch.randint(0, 256, (1, 3, 375, 500), dtype=torch.uint8, device=device)
    side = torch.randint(112, 500, (args.proposals,)).float()
    cx, cy = torch.rand(args.proposals) * 500, torch.rand(args.proposals) * 375
    windows = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1).to(device)
    result = {"proposals": args.proposals, "image": [375, 500]}
    for bf16 in (False, True):
        def run(bf16=bf16):
            with _autocast(device, bf16):
                instance_scores(lambda x: net(normalizer(x)), image, windows, args.input_size, "max", 64)
        seconds = _timed(run, device, 1, max(1, args.steps // 2))
        result["bf16" if bf16 else "fp32"] = {"windows_per_s": round(args.proposals / seconds, 1),
                                              "image_s": round(seconds, 4)}
    return result


def bench_crf(args) -> dict:
    """Images/s of the host CRF pool on 375 x 500 images (all cores)."""
    try:
        import pydensecrf  # noqa: F401

        from deconvnet.inference.crf import PRESETS, CRFPool, default_workers
    except ImportError as err:
        return {"skipped": f"pydensecrf not importable ({err})"}
    rng = np.random.default_rng(0)
    height, width = (120, 160) if args.tiny else (375, 500)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    prob = rng.dirichlet(np.ones(21), (height, width)).transpose(2, 0, 1).astype(np.float32)
    workers = default_workers()
    with CRFPool(PRESETS["official"], workers) as pool:
        for k in range(workers):  # start the processes before timing
            pool.submit(-1 - k, image, prob)
        pool.drain()
        start = time.perf_counter()
        for k in range(args.crf_images):
            pool.submit(k, image, prob)
        pool.drain()
        seconds = time.perf_counter() - start
    return {"images": args.crf_images, "image": [height, width], "workers": workers,
            "images_per_s": round(args.crf_images / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny network and sizes (checks the script)")
    parser.add_argument("--compile", default=None, choices=["on", "off"],
                        help="also time torch.compile (default: on for CUDA, off otherwise)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: train,bf16,device,eval,crf")
    parser.add_argument("--width", type=float, default=None, help="DeconvNet width (default 1, tiny 0.0625)")
    parser.add_argument("--batch", type=int, default=None, help="windows per batch (default 64, tiny 4)")
    args = parser.parse_args()
    width, batch = args.width, args.batch
    device = torch.device(args.device)
    args.compile = (args.compile or ("on" if device.type == "cuda" else "off")) == "on"
    if args.tiny:
        args.width, args.input_size, args.window_size, args.batch = 0.0625, 32, 40, 4
        args.warmup, args.steps, args.proposals, args.store_images, args.crf_images = 1, 2, 4, 4, 2
    else:
        args.width, args.input_size, args.window_size, args.batch = 1.0, 224, 250, 64
        args.warmup, args.steps, args.proposals, args.store_images, args.crf_images = 3, 10, 50, 200, 16
    args.width = width if width is not None else args.width
    args.batch = batch if batch is not None else args.batch
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
    skip = set(filter(None, args.skip.split(",")))
    start = time.perf_counter()
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cores": os.cpu_count(),
        "settings": {"width": args.width, "input_size": args.input_size, "batch": args.batch, "tiny": args.tiny},
    }
    parts = {"train": lambda: bench_train(args, device), "bf16": lambda: bench_bf16_error(args, device),
             "device": lambda: bench_device_windows(args, device),
             "eval": lambda: bench_eval_windows(args, device), "crf": lambda: bench_crf(args)}
    names = {"train": "train", "bf16": "bf16_logit_error", "device": "device_windows",
             "eval": "eval_windows", "crf": "crf"}
    for part, run in parts.items():
        if part in skip:
            continue
        try:
            report[names[part]] = run()
        except Exception as err:  # report what failed and carry on with the rest
            report[names[part]] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    report["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
