"""``deconvnet predict CONFIG IMAGE... [--out DIR]``: label PNGs and colour overlays for
arbitrary images.

Same per-image path as the evaluation (:func:`~deconvnet.inference.predictor.build_predictor`,
proposals computed for each image, then :class:`~deconvnet.inference.crf_stage.CRFStage`),
without ground truth. For every image and method (see ``eval.*`` and ``crf.*``):

    <folder>/<method slug>/<image stem>.png   VOC palette PNG, pixel value = class
    <folder>/overlays/<image stem>.png         the image and every method's labels

``folder`` is ``--out`` when given, else ``<output_dir>-predict`` beside the config's
output_dir: a prediction never writes into an evaluation's (or a training's) folder. The
folder is locked while predicting and gets its own ``config.yaml`` once the checkpoints are
accepted; a folder made with another config is refused (``resume=never`` replaces it).

W&B (``logger.mode``, as train and eval; a run of job type ``predict`` under
``<folder>/wandb``): the config with a ``predict`` section (``folder``, ``num_images``), the
metric ``predict/images``, the table ``predict/classes`` (for each image, the classes each
method found) and the first ``logger.log_images`` overlays as ``predict/overlays``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from deconvnet.config import ConfigError
from deconvnet.data.classes import class_names
from deconvnet.data.imageio import read_rgb, write_index_png
from deconvnet.errors import UserError
from deconvnet.inference.crf import crf_params
from deconvnet.inference.crf_stage import CRF_INPUTS, CRFStage
from deconvnet.inference.predictor import build_predictor
from deconvnet.inference.submission import method_slug
from deconvnet.metrics import METHODS
from deconvnet.runtime.run_folder import COMPLETION_FILE, RunFolder
from deconvnet.runtime.wandb_setup import build_logger, finish_run

log = logging.getLogger(__name__)

PREDICT_SUFFIX = "-predict"
_OTHER_RUNS = ("results.csv", "checkpoints", COMPLETION_FILE)  # what marks a train/eval folder


def _device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator=gpu but no CUDA device is available; use trainer.accelerator=cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def predict_folder(cfg: DictConfig, out: str | Path | None = None) -> Path:
    """Where predictions go: ``out``, else ``<output_dir>-predict``."""
    if out is not None:
        return Path(out)
    output_dir = Path(cfg.output_dir)
    return output_dir.with_name(output_dir.name + PREDICT_SUFFIX)


def _check_not_another_run(folder: Path) -> None:
    found = [name for name in _OTHER_RUNS if (folder / name).exists()]
    if found:
        raise UserError(f"{folder} holds a training or evaluation run ({', '.join(found)}); predictions "
                        "go into a folder of their own: give another --out")


def predict(cfg: DictConfig, images: Sequence[str | Path], out: str | Path | None = None) -> dict[str, dict[str, Path]]:
    """Segment ``images`` into :func:`predict_folder`; returns {image stem: {method: label PNG}}."""
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
    target = predict_folder(cfg, out)
    _check_not_another_run(target)
    folder = RunFolder(target, "predict")
    with folder.lock():
        folder.check_same_config(cfg)
        device = _device(cfg)
        predictor = build_predictor(cfg).to(device).eval()  # accepts the checkpoints
        folder.remove_leftovers()
        folder.write_config(cfg)
        logger = build_logger(cfg, target, job_type="predict",
                              extra_config={"predict": {"folder": str(target), "num_images": len(paths)}})
        failed = True
        try:
            written, found = _predict(cfg, predictor, paths, target, device)
            if logger is not None:
                _log(logger, target, found, int(cfg.logger.log_images))
            failed = False
        finally:
            finish_run(logger, failed=failed)
    log.info("labels and overlays of %d images written to %s", len(written), target)
    return written


def _predict(cfg: DictConfig, predictor, paths: list[Path], folder: Path, device: torch.device,
             ) -> tuple[dict[str, dict[str, Path]], dict[str, dict[str, list[str]]]]:
    """({image stem: {method: label PNG}}, {image stem: {method: names of the classes found}})."""
    crf = crf_params(cfg.crf) if cfg.crf.enabled else None
    names = class_names(int(cfg.model.num_classes))
    written: dict[str, dict[str, Path]] = {}
    found: dict[str, dict[str, list[str]]] = {}

    def keep(finished) -> None:
        for (stem, rgb), done in finished:
            written[stem] = _write(folder, stem, rgb, done)
            found[stem] = {method: [names[c] for c in np.unique(lab)] for method, lab in done.items()}

    with CRFStage(crf, int(cfg.crf.workers)) as stage:
        for path in tqdm(paths, desc="predict", unit="img"):
            image = read_rgb(path)
            proposals = None
            if predictor.deconvnet is not None:
                from deconvnet.data.proposals import proposals_for_image

                proposals = proposals_for_image(cfg, image)
            tensor = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous().to(device)
            probs = predictor(tensor, proposals)
            labels = {m: p.argmax(0).to(torch.uint8).cpu().numpy() for m, p in probs.items()}
            to_refine = {m: p.cpu().numpy() for m, p in probs.items() if m in CRF_INPUTS}
            keep(stage.add((path.stem, image), image, labels, to_refine))
        keep(stage.finish())
    return written, found


def _write(folder: Path, stem: str, image: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, Path]:
    """One image's label PNGs (one per method) and its overlay panel."""
    from deconvnet.viz import overlay_panel, save_rgb_png

    ordered = {m: labels[m] for m in METHODS if m in labels}
    files = {}
    for method, lab in ordered.items():
        target = folder / method_slug(method) / f"{stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        files[method] = write_index_png(target, lab)
    save_rgb_png(folder / "overlays" / f"{stem}.png", overlay_panel(image, None, ordered, title=stem))
    return files


def _log(logger, folder: Path, found: dict[str, dict[str, list[str]]], overlays: int) -> None:
    """What a prediction made, to W&B: the number of images, for each image the classes each
    method found (a table), and the first ``overlays`` overlay panels."""
    methods = [m for m in METHODS if any(m in per_image for per_image in found.values())]
    logger.log_metrics({"predict/images": len(found)})
    rows = [[stem, *(", ".join(per_image.get(m, [])) for m in methods)] for stem, per_image in found.items()]
    logger.log_table(key="predict/classes", columns=["image", *methods], data=rows)
    panels = [folder / "overlays" / f"{stem}.png" for stem in list(found)[:overlays]]
    if panels:
        logger.log_image(key="predict/overlays", images=[str(p) for p in panels], caption=[p.stem for p in panels])
