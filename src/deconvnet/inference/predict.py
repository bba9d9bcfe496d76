"""``deconvnet predict CONFIG IMAGE...``: label PNGs and colour overlays for arbitrary images.

Same pipeline as the evaluation (proposals computed for each image, instance-wise
DeconvNet, FCN-8s, ensemble, dense CRF), without ground truth. For every image and
method (see ``eval.*`` and ``crf.*`` of the config):

    <output_dir>/<method slug>/<image stem>.png   VOC palette PNG, pixel value = class
    <output_dir>/overlays/<image stem>.png         the image and every method's labels
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from deconvnet.config import ConfigError, save_config
from deconvnet.data.imageio import read_rgb, write_index_png
from deconvnet.errors import UserError
from deconvnet.inference.crf import CRFPool, crf_params
from deconvnet.inference.ensemble import CRF_INPUTS
from deconvnet.inference.predictor import EnsemblePredictor, predictor_window_params
from deconvnet.inference.submission import method_slug
from deconvnet.metrics import METHODS


def _device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator=gpu but no CUDA device is available; use trainer.accelerator=cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def predict(cfg: DictConfig, images: Sequence[str | Path]) -> dict[str, dict[str, Path]]:
    """Segment ``images``; returns {image stem: {method: label PNG path}}."""
    from deconvnet.inference.run import load_networks

    paths = [Path(p) for p in images]
    duplicates = [stem for stem, n in Counter(p.stem for p in paths).items() if n > 1]
    if duplicates:
        raise UserError(f"several images are named {duplicates[0]}.*: outputs are named after the "
                        "image file name, so give images with distinct names")
    if not cfg.eval.deconvnet_checkpoint and not cfg.eval.fcn_checkpoint:
        raise ConfigError("set eval.deconvnet_checkpoint and/or eval.fcn_checkpoint to predict")
    for path in paths:
        if not path.is_file():
            raise UserError(f"image not found: {path}")
    output_dir = Path(cfg.output_dir)
    save_config(cfg, output_dir)

    device = _device(cfg)
    deconvnet, fcn, deconv_model = load_networks(cfg)
    ev = cfg.eval
    predictor = EnsemblePredictor(
        deconvnet, fcn, input_size=int(deconv_model.get("input_size", cfg.model.input_size)),
        num_proposals=int(ev.num_proposals), aggregation=str(ev.aggregation), ensemble=str(ev.ensemble),
        proposal_batch_size=int(ev.proposal_batch_size), **predictor_window_params(cfg.data),
    ).to(device).eval()
    crf = crf_params(cfg.crf) if cfg.crf.enabled else None
    pool = CRFPool(crf, int(cfg.crf.workers)) if crf is not None else None

    written: dict[str, dict[str, Path]] = {}
    pending: dict[str, tuple[np.ndarray, dict[str, np.ndarray], int]] = {}
    try:
        for path in tqdm(paths, desc="predict", unit="img"):
            image = read_rgb(path)
            proposals = None
            if deconvnet is not None:
                from deconvnet.data.proposals import proposals_for_image

                proposals = proposals_for_image(cfg, image)
            tensor = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous().to(device)
            probs = predictor(tensor, proposals)
            labels = {m: p.argmax(0).to(torch.uint8).cpu().numpy() for m, p in probs.items()}
            jobs = [m for m in probs if m in CRF_INPUTS] if pool is not None else []
            pending[path.stem] = (image, labels, len(jobs))
            for method in jobs:
                pool.submit((path.stem, f"{method}+CRF"), image, probs[method].cpu().numpy())
            finished = pool.ready() if pool is not None else []
            if not jobs:
                finished.append(((path.stem, None), None))
            for (stem, method), crf_labels in finished:
                written.update(_complete(output_dir, pending, stem, method, crf_labels))
        for (stem, method), crf_labels in (pool.drain() if pool is not None else []):
            written.update(_complete(output_dir, pending, stem, method, crf_labels))
    finally:
        if pool is not None:
            pool.close()
    print(f"labels and overlays of {len(written)} images written to {output_dir}")
    return written


def _complete(output_dir: Path, pending: dict, stem: str, method: str | None,
              crf_labels: np.ndarray | None) -> dict[str, dict[str, Path]]:
    """Record one CRF result; once an image has all its labels, write its files."""
    image, labels, waiting = pending[stem]
    if method is not None:
        labels[method] = crf_labels
        waiting -= 1
    pending[stem] = (image, labels, waiting)
    if waiting > 0:
        return {}
    del pending[stem]
    from deconvnet.viz import overlay_panel, save_rgb_png

    ordered = {m: labels[m] for m in METHODS if m in labels}
    files = {m: write_index_png(_png(output_dir / method_slug(m) / f"{stem}.png"), lab)
             for m, lab in ordered.items()}
    save_rgb_png(output_dir / "overlays" / f"{stem}.png", overlay_panel(image, None, ordered, title=stem))
    return {stem: files}


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
