"""Proposal quality of each available source on a synthetic val split: which one to use
when the Structured Edge model is missing.

    python benchmarks/proposals.py [--images 120] [--size 160] [--root DIR] [--top-k 50]
                                   [--edge-model data/models/model.yml.gz]

Writes a synthetic VOC set (``--size``: longer image side; 0 for VOC-like sizes up to
500 px) into a temporary folder, or uses ``--root``, and scores the top ``--top-k``
proposals of each image of its val split, as each source ranks them (clipped to the image,
no size filter), against the annotated instance boxes:

* recall@0.5: the fraction of objects with a proposal box of IoU >= 0.5;
* recall@0.5 >= 112 px: the same over objects whose shorter side is >= 112 px (the size the
  official inference keeps windows for; none on 160-px images);
* mean best IoU: the IoU of each object's best proposal, averaged over objects;
* s/image: proposal time per image in this process.

Sources: EdgeBoxes on the in-process gradient edges (the fallback), OpenCV's selective
search (fast mode), and EdgeBoxes on Structured Edges when the model file exists. Prints a
Markdown table, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconvnet.data.proposals.generators import EdgeBoxes, SelectiveSearch, finalize
from deconvnet.data.synthetic import generate
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.data.windows import box_iou

LARGE = 112  # px, the official inference's minimum window side


def sources(edge_model: Path | None) -> dict[str, object]:
    found = {"EdgeBoxes, gradient edges (fallback)": EdgeBoxes(edge_model=None),
             "selective search (fast)": SelectiveSearch()}
    if edge_model is not None and edge_model.is_file():
        found["EdgeBoxes, Structured Edges"] = EdgeBoxes(edge_model=str(edge_model))
    return found


def score(reader: VOCSegmentationIndex, generator, top_k: int) -> dict[str, float]:
    best, large, seconds = [], [], 0.0
    for i in tqdm(range(len(reader)), desc=generator.method, unit="img", leave=False):
        image = reader.image(i)
        truth = np.array([inst.box for inst in reader.instances(i)], np.float32).reshape(-1, 4)
        start = time.perf_counter()
        boxes, scores = generator.propose_image(image)
        seconds += time.perf_counter() - start
        top = finalize(boxes, scores, image.shape[1], image.shape[0], min_size=0, top_k=top_k)
        iou = box_iou(truth, top).max(axis=1) if len(top) else np.zeros(len(truth), np.float32)
        best.extend(iou.tolist())
        large.extend(np.minimum(truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1]) >= LARGE)
    best_arr, large_arr = np.array(best), np.array(large, bool)
    return {
        "objects": int(len(best_arr)),
        "recall@0.5": float((best_arr >= 0.5).mean()) if len(best_arr) else float("nan"),
        "objects >= 112 px": int(large_arr.sum()),
        "recall@0.5 >= 112 px": float((best_arr[large_arr] >= 0.5).mean()) if large_arr.any() else float("nan"),
        "mean best IoU": float(best_arr.mean()) if len(best_arr) else float("nan"),
        "s/image": seconds / max(1, len(reader)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=120, help="synthetic images in all (val is about 30%%)")
    parser.add_argument("--size", type=int, default=160, help="longer side; 0: VOC-like sizes up to 500 px")
    parser.add_argument("--root", type=Path, default=None, help="an existing VOC-layout root instead")
    parser.add_argument("--split", default="val")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--edge-model", type=Path, default=Path("data/models/model.yml.gz"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "synthetic"
            generate(root, num_images=args.images, seed=0, size=args.size or None)
        reader = VOCSegmentationIndex(root, args.split)
        results = {name: score(reader, generator, args.top_k) for name, generator in sources(args.edge_model).items()}

    if not (args.edge_model and args.edge_model.is_file()):
        results["EdgeBoxes, Structured Edges"] = {"note": f"no model file at {args.edge_model}"}
    size = f"{args.size} px" if args.size else "VOC-like sizes"
    print(f"top-{args.top_k} proposals, {args.split} split of {root if args.root else 'a synthetic set'} "
          f"({len(reader)} images, {size})\n")
    print("| source | recall@0.5 | recall@0.5, objects >= 112 px | mean best IoU | s/image |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        if "note" in r:
            print(f"| {name} | {r['note']} | | | |")
            continue
        large = (f"{100 * r['recall@0.5 >= 112 px']:.1f} ({r['objects >= 112 px']} objects)"
                 if r["objects >= 112 px"] else "no such objects")
        print(f"| {name} | {100 * r['recall@0.5']:.1f} ({r['objects']} objects) | {large} | "
              f"{r['mean best IoU']:.3f} | {r['s/image']:.3f} |")
    print(json.dumps({"split": args.split, "images": len(reader), "size": args.size, "top_k": args.top_k,
                      "results": results}))


if __name__ == "__main__":
    main()
