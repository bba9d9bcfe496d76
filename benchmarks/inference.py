"""Benchmark of the evaluation's two hot paths; prints one JSON object.

1. Instance-wise DeconvNet inference of one image: the batched path
   (:func:`deconvnet.inference.instance.instance_scores`: one roi_align crop of all windows,
   forwards in chunks, the paste-back of ``paste_windows``: the compiled loop on a CPU,
   grid_sample on a GPU) against a per-proposal loop as in the
   official MATLAB script (crop one window, forward it, resize its scores to the box,
   max-merge into the accumulator), on the same image and windows. Reports both times,
   the speed-up, the time each path spends in the network's forwards (the rest is the
   crops and the paste-back) and the largest difference between the two score maps.
2. The dense CRF: N images through :class:`~deconvnet.inference.crf.CRFPool` against one
   process running them one after the other (same labels required).

    python benchmarks/inference.py                       # CPU defaults (small network)
    python benchmarks/inference.py --device cuda --width 1 --proposals 50   # the paper's sizes
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from deconvnet.data.windows import crop_boxes_batched
from deconvnet.inference.crf import PRESETS, CRFPool, default_workers, dense_crf
from deconvnet.inference.instance import forward_in_chunks, instance_scores, paste_by_grid_sample, paste_windows
from deconvnet.inference.predictor import with_normalizer
from deconvnet.models import DeconvNet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_windows(num: int, height: int, width: int, min_size: int, seed: int) -> torch.Tensor:
    """Integer square windows (min side >= min_size) around random centres, some crossing
    the border, as squared EdgeBox proposals are."""
    rng = np.random.default_rng(seed)
    side = rng.integers(min_size, max(height, width) + 1, num)
    cx, cy = rng.integers(0, width, num), rng.integers(0, height, num)
    boxes = np.stack([cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side], 1)
    return torch.from_numpy(boxes.astype(np.float32))


@torch.no_grad()
def per_proposal_loop(network, image: torch.Tensor, windows: torch.Tensor, input_size: int,
                      forward_seconds: list[float] | None = None) -> torch.Tensor:
    """The official script's loop: one window at a time, max-merged into a zero accumulator.
    ``forward_seconds`` (if given) receives the time spent in the network's forwards."""
    height, width = image.shape[-2:]
    total = None
    for x1, y1, x2, y2 in windows.int().tolist():
        crop = crop_boxes_batched(image.float(), [windows.new_tensor([[x1, y1, x2, y2]])], input_size)
        start = time.perf_counter()
        scores = network(crop).float()
        if forward_seconds is not None:  # synchronise only when timing the forwards apart
            _sync(scores.device)
            forward_seconds.append(time.perf_counter() - start)
        if total is None:
            total = scores.new_zeros(scores.shape[1:2] + (height, width))
        resized = F.interpolate(scores, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
        ys, xs, ye, xe = max(y1, 0), max(x1, 0), min(y2, height), min(x2, width)
        if ye > ys and xe > xs:
            part = resized[:, ys - y1:ye - y1, xs - x1:xe - x1]
            total[:, ys:ye, xs:xe] = torch.maximum(total[:, ys:ye, xs:xe], part)
    return total


def _best_of(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """For each named function, the fastest of ``repeats`` timed calls after one warm-up call.
    The functions take turns, so that a machine whose speed drifts during the run (a shared
    or throttled one) slows them alike and their ratios hold."""
    for fn in fns.values():
        fn()  # warm-up (cudnn autotune, allocator, numba's compilation)
    _sync(device)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_instance(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = DeconvNet(num_classes=21, input_size=args.input_size, width=args.width)
    for module in net.modules():  # O(1) scores, so that the comparison below means something
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.kaiming_normal_(module.weight)
    network = with_normalizer(net, "torchvision").to(device).eval()
    if args.channels_last:  # as the predictor does with trainer.channels_last (both paths)
        network.to(memory_format=torch.channels_last)
    height, width = args.height, args.width_px
    image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, device=device)
    windows = random_windows(args.proposals, height, width, min(112, min(height, width)), seed=0).to(device)

    with torch.no_grad():
        batched = instance_scores(network, image, windows, args.input_size, "max", args.batch_size)
        looped = per_proposal_loop(network, image, windows, args.input_size)
        # where the time goes: the network against everything else, in each path
        crops = crop_boxes_batched(image.float(), [windows], args.input_size)
        scores = forward_in_chunks(network, crops, args.batch_size)
        loop_forwards: list[float] = []  # the loop's forwards, timed apart (synchronised per window)

        def loop_timing_forwards():
            seconds: list[float] = []
            per_proposal_loop(network, image, windows, args.input_size, seconds)
            loop_forwards.append(sum(seconds))

        best = _best_of({
            "batched": lambda: instance_scores(network, image, windows, args.input_size, "max", args.batch_size),
            "loop": lambda: per_proposal_loop(network, image, windows, args.input_size),
            "forward": lambda: forward_in_chunks(network, crops, args.batch_size),
            "paste": lambda: paste_windows(scores, windows, height, width, "max"),
            # the GPU's paste; on a CPU the alternative the compiled loop replaced
            "grid_sample_paste": lambda: paste_by_grid_sample(scores, windows, height, width, "max"),
            "loop_forwards": loop_timing_forwards,
        }, device, args.repeats)
    batched_s, loop_s, loop_forward_s = best["batched"], best["loop"], min(loop_forwards)
    diff = (batched - looped).abs().max().item()
    scale = looped.abs().max().item()
    return {
        "device": str(device), "image": [height, width], "proposals": args.proposals,
        "input_size": args.input_size, "width": args.width, "batch_size": args.batch_size,
        "channels_last": args.channels_last,
        "batched_s": batched_s, "loop_s": loop_s, "speedup": loop_s / batched_s,
        "forward_s": {"batched": best["forward"], "loop": loop_forward_s,
                      "speedup": loop_forward_s / best["forward"]},
        "paste_s": {"batched": best["paste"], "grid_sample": best["grid_sample_paste"],
                    "loop_rest": loop_s - loop_forward_s},
        "max_abs_diff": diff, "max_abs_score": scale,
        "same_within_tolerance": bool(diff <= 1e-4 * max(1.0, scale)),
    }


def photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth background with flat-coloured rectangles and mild noise: the CRF's cost
    depends on how many distinct colours the image has, so white noise would be unfair."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 200 / width, yy * 200 / height, np.full_like(xx, 90)], -1).astype(np.float32)
    for _ in range(6):
        h, w = rng.integers(height // 6, height // 2), rng.integers(width // 6, width // 2)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
    image += rng.normal(0, 4, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def bench_crf(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    height, width = args.height, args.width_px
    jobs = []
    for _ in range(args.crf_images):
        image = photo_like(rng, height, width)
        logits = rng.normal(0, 1, (21, height // 8 + 1, width // 8 + 1)).astype(np.float32)
        logits = logits.repeat(8, 1).repeat(8, 2)[:, :height, :width]
        prob = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
        jobs.append((image, prob.astype(np.float32)))
    params = PRESETS["official"]
    start = time.perf_counter()
    serial = [dense_crf(image, prob, params) for image, prob in jobs]
    serial_s = time.perf_counter() - start
    workers = args.crf_workers or default_workers()
    start = time.perf_counter()
    with CRFPool(params, workers) as pool:
        started = time.perf_counter()
        # warm the workers (process start-up), then time the steady state separately
        for k in range(workers):
            pool.submit(-1 - k, *jobs[0])
        pool.drain()
        warm = time.perf_counter()
        for k, (image, prob) in enumerate(jobs):
            pool.submit(k, image, prob)
        pooled = pool.drain()
        done = time.perf_counter()
    same = [k for k, _ in pooled] == list(range(len(jobs))) and all(
        np.array_equal(a, b) for (_, a), b in zip(pooled, serial))
    return {
        "images": len(jobs), "image": [height, width], "workers": workers,
        "cores": len(os.sched_getaffinity(0)), "serial_s": serial_s, "pool_s": done - warm,
        "pool_startup_s": warm - started + (started - start),
        "speedup": serial_s / (done - warm), "same_labels": bool(same),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=float, default=0.125, help="DeconvNet channel multiplier")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--proposals", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward (batched)")
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width-px", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true",
                        help="channels_last network and windows in both paths (trainer.channels_last)")
    parser.add_argument("--crf-images", type=int, default=8)
    parser.add_argument("--crf-workers", type=int, default=0, help="0: all cores")
    parser.add_argument("--skip", choices=["instance", "crf"], default=None)
    args = parser.parse_args()
    report = {}
    if args.skip != "instance":
        report["instance"] = bench_instance(args)
    if args.skip != "crf":
        report["crf"] = bench_crf(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
