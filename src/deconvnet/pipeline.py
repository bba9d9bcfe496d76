"""The whole recipe of an experiment folder, in order, each step skipped when done.

    deconvnet pipeline experiments/table1 [key=value ...]

An experiment folder holds `stage1.yaml`, `stage2.yaml`, `fcn8s.yaml` and `eval.yaml`
(and optionally `test.yaml`, the evaluation-server run on the test split). The steps:

1. data: the train, val (and eval) splits are checked once: file headers, or with
   `data.check=full` (`--full`) every image and mask decoded (deconvnet.data.check);
2. proposals: computed and cached for the splits that need them;
3. stage1, stage2, fcn8s: trained; a step is skipped when its run folder's completion
   record matches its config and data (``training.run.is_trained``), an interrupted one
   resumes from its last checkpoint (resume=auto);
4. eval: the ensemble evaluation on val, skipped when complete for this config, data and
   these checkpoint files (``inference.run.is_evaluated``);
5. stage1_trainval, stage2_trainval, fcn8s_trainval (when the folder has them and
   `test.yaml`): the networks for the server, trained on trainval_aug as the paper's
   submission; skipped while the test split is absent;
6. test: the server archive, when `test.yaml` exists and the test split is present.

Each step's output feeds the next: the checkpoint a training step writes is passed on as
stage 2's ``model.init_from`` (stage 1) and as the evaluation's ``eval.deconvnet_checkpoint``
(stage 2) / ``eval.fcn_checkpoint`` (FCN-8s), and likewise from the trainval steps to the
test step, so the recipes' own paths need not agree.
The command-line overrides apply to every step (for example `data.root=data/synthetic`), so
every step reads the same data, and come after the wiring. Under DDP, run it with the same
launcher as a single step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from deconvnet.config import load_config
from deconvnet.errors import UserError

log = logging.getLogger(__name__)

TRAIN_STEPS = ("stage1", "stage2", "fcn8s")
SERVER_TRAIN_STEPS = ("stage1_trainval", "stage2_trainval", "fcn8s_trainval")  # optional


# which later step reads a training step's final checkpoint, under which key
# (the server archive, test, reads the networks trained on trainval_aug)
FEEDS = {"stage1": {"stage2": "model.init_from"},
         "stage2": {"eval": "eval.deconvnet_checkpoint"},
         "fcn8s": {"eval": "eval.fcn_checkpoint"},
         "stage1_trainval": {"stage2_trainval": "model.init_from"},
         "stage2_trainval": {"test": "eval.deconvnet_checkpoint"},
         "fcn8s_trainval": {"test": "eval.fcn_checkpoint"}}


@dataclass
class Step:
    name: str
    config: Path
    done: Callable[[DictConfig], bool]
    run: Callable[[DictConfig], None]


def _final_checkpoint(cfg: DictConfig) -> Path:
    from deconvnet.training.checkpoints import FINAL, checkpoint_dir

    return checkpoint_dir(cfg.output_dir) / FINAL


def _trained(cfg: DictConfig) -> bool:
    from deconvnet.training.run import is_trained

    return is_trained(cfg)


def _evaluated(cfg: DictConfig) -> bool:
    from deconvnet.inference.run import is_evaluated

    return is_evaluated(cfg)


def _check_data(cfg: DictConfig) -> None:
    from deconvnet.data.check import check_data

    for split, images in check_data(cfg).items():  # data.check=headers|full (--full)
        log.info(f"[data] {split}: {images} images in {cfg.data.root} ({cfg.data.check} check)")


def _proposals(cfg: DictConfig) -> None:
    from deconvnet.data.proposals import precompute_from_config

    precompute_from_config(cfg)


def _train(cfg: DictConfig) -> None:
    from deconvnet.training.run import train

    train(cfg)


def _evaluate(cfg: DictConfig) -> None:
    from deconvnet.inference.run import evaluate

    evaluate(cfg)


def _test_split_present(cfg: DictConfig) -> bool:
    lists = Path(cfg.data.root) / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    return (lists / f"{cfg.eval.split}.txt").is_file()


def _server_split_present(cfg: DictConfig) -> bool:
    lists = Path(cfg.data.root) / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    return (lists / "test.txt").is_file()


def plan(exp_dir: str | Path) -> list[Step]:
    """The steps of an experiment folder, in the order they run."""
    exp = Path(exp_dir)
    if not exp.is_dir():
        raise UserError(f"experiment folder not found: {exp} (try experiments/table1 or experiments/demo)")
    missing = [f"{n}.yaml" for n in (*TRAIN_STEPS, "eval") if not (exp / f"{n}.yaml").is_file()]
    if missing:
        raise UserError(f"{exp} lacks {', '.join(missing)}: an experiment folder needs "
                        "stage1.yaml, stage2.yaml, fcn8s.yaml and eval.yaml")
    never = lambda cfg: False  # noqa: E731 - checks are cheap and idempotent
    steps = [
        Step("data", exp / "stage1.yaml", never, _check_data),
        Step("proposals", exp / "stage2.yaml", never, _proposals),
    ]
    steps += [Step(n, exp / f"{n}.yaml", _trained, _train) for n in TRAIN_STEPS]
    steps.append(Step("eval", exp / "eval.yaml", _evaluated, _evaluate))
    if (exp / "test.yaml").is_file():
        steps += [Step(n, exp / f"{n}.yaml",
                       lambda c: not _server_split_present(c) or _trained(c), _train)
                  for n in SERVER_TRAIN_STEPS if (exp / f"{n}.yaml").is_file()]
        steps.append(Step("test", exp / "test.yaml",
                          lambda c: not _test_split_present(c) or _evaluated(c), _evaluate))
    return steps


def wiring(steps: list[Step], overrides: list[str] | None = None) -> dict[str, list[str]]:
    """Step name -> the overrides that hand it the outputs of earlier steps (see FEEDS)."""
    wired: dict[str, list[str]] = {s.name: [] for s in steps}
    for step in steps:
        if step.name not in FEEDS:
            continue
        final = _final_checkpoint(load_config(step.config, list(wired[step.name]) + list(overrides or [])))
        for reader, key in FEEDS[step.name].items():
            if reader in wired:
                wired[reader].append(f"{key}={final}")
    return wired


def run_pipeline(exp_dir: str | Path, overrides: list[str] | None = None,
                 only: list[str] | None = None) -> None:
    """Run every step of `exp_dir` that is not complete yet."""
    steps = plan(exp_dir)
    unknown = set(only or []) - {s.name for s in steps}
    if unknown:
        raise UserError(f"unknown step(s) {sorted(unknown)}; steps: {[s.name for s in steps]}")
    wired = wiring(steps, overrides)
    for step in steps:
        if only and step.name not in only:
            continue
        cfg = load_config(step.config, wired[step.name] + list(overrides or []))
        if step.done(cfg):
            log.info(f"[{step.name}] complete, skipped ({cfg.output_dir})")
            continue
        log.info(f"[{step.name}] {step.config} -> {cfg.output_dir}")
        start = time.perf_counter()
        step.run(cfg)
        log.info(f"[{step.name}] done in {time.perf_counter() - start:.0f} s")
