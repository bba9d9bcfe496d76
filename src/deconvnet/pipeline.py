"""The whole recipe of an experiment folder, in order, each step skipped when done.

    deconvnet pipeline experiments/table1 [key=value ...]

An experiment folder holds `stage1.yaml`, `stage2.yaml`, `fcn8s.yaml` and `eval.yaml`
(and optionally `test.yaml`, the evaluation-server run on the test split). The steps:

1. data: the train, val (and eval) splits are checked once: file headers, or with
   `data.check=full` (`--full`) every image and mask decoded (deconvnet.data.check);
2. proposals: computed and cached for the splits that need them;
3. stage1, stage2, fcn8s: trained; a step whose `checkpoints/final.ckpt` exists is
   skipped, an interrupted one resumes from its last checkpoint (resume=auto);
4. eval: the ensemble evaluation on val (skipped when its results.csv exists);
5. stage1_trainval, stage2_trainval, fcn8s_trainval (when the folder has them and
   `test.yaml`): the networks for the server, trained on trainval_aug as the paper's
   submission; skipped while the test split is absent;
6. test: the server archive, when `test.yaml` exists and the test split is present.

The overrides apply to every step (for example `data.root=data/synthetic`), so every
step reads the same data. Under DDP, run it with the same launcher as a single step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from deconvnet.config import load_config
from deconvnet.errors import UserError

TRAIN_STEPS = ("stage1", "stage2", "fcn8s")
SERVER_TRAIN_STEPS = ("stage1_trainval", "stage2_trainval", "fcn8s_trainval")  # optional


@dataclass
class Step:
    name: str
    config: Path
    done: Callable[[DictConfig], bool]
    run: Callable[[DictConfig], None]


def _final_checkpoint(cfg: DictConfig) -> Path:
    return Path(cfg.output_dir) / "checkpoints" / "final.ckpt"


def _check_data(cfg: DictConfig) -> None:
    from deconvnet.data.check import check_data

    for split, images in check_data(cfg).items():  # data.check=headers|full (--full)
        print(f"[data] {split}: {images} images in {cfg.data.root} ({cfg.data.check} check)")


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
    steps += [Step(n, exp / f"{n}.yaml", lambda c: _final_checkpoint(c).is_file(), _train)
              for n in TRAIN_STEPS]
    steps.append(Step("eval", exp / "eval.yaml",
                      lambda c: (Path(c.output_dir) / "results.csv").is_file(), _evaluate))
    if (exp / "test.yaml").is_file():
        steps += [Step(n, exp / f"{n}.yaml",
                       lambda c: not _server_split_present(c) or _final_checkpoint(c).is_file(), _train)
                  for n in SERVER_TRAIN_STEPS if (exp / f"{n}.yaml").is_file()]
        steps.append(Step("test", exp / "test.yaml",
                          lambda c: not _test_split_present(c)
                          or any(Path(c.output_dir).glob("*.tar.gz")), _evaluate))
    return steps


def run_pipeline(exp_dir: str | Path, overrides: list[str] | None = None,
                 only: list[str] | None = None) -> None:
    """Run every step of `exp_dir` that is not complete yet."""
    steps = plan(exp_dir)
    unknown = set(only or []) - {s.name for s in steps}
    if unknown:
        raise UserError(f"unknown step(s) {sorted(unknown)}; steps: {[s.name for s in steps]}")
    for step in steps:
        if only and step.name not in only:
            continue
        cfg = load_config(step.config, overrides)
        if step.done(cfg):
            print(f"[{step.name}] complete, skipped ({cfg.output_dir})")
            continue
        print(f"[{step.name}] {step.config} -> {cfg.output_dir}")
        start = time.perf_counter()
        step.run(cfg)
        print(f"[{step.name}] done in {time.perf_counter() - start:.0f} s")
