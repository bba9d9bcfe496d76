"""Experiment configuration: a typed OmegaConf schema, YAML composition and overrides.

A config file is YAML. It may name other files to build on:

    _base_: [../../configs/model/deconvnet.yaml, ../../configs/data/stage1.yaml]
    name: table1-stage1
    optim: {lr: 0.01}

Bases are merged in order (paths relative to the file that names them, and they may
have bases of their own), then the file itself, then the command line's dotted
``key=value`` overrides. Everything is validated against :class:`ExperimentConfig`:
an unknown key is an error that names the closest valid key.

Defaults are the paper's values (PAPER.md); deviations are options.
"""

from __future__ import annotations

import difflib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from deconvnet.errors import UserError

BASE_KEY = "_base_"


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message says how to fix it."""


@dataclass
class ModelConfig:
    name: str = "deconvnet"  # deconvnet | fcn8s
    num_classes: int = 21
    input_size: int = 224  # DeconvNet only: the fc6 kernel follows it (input / 32)
    width: float = 1.0  # channel multiplier; < 1 for tests and the CPU demo
    classifier_std: float = 0.01  # DeconvNet classifier init N(0, std); paper 0.01
    fcn_batch_norm: bool = False  # FCN-8s: BatchNorm after each VGG conv (not the reference)
    fcn_skip_scaling: bool = True  # FCN-8s at-once: pool4 x 0.01, pool3 x 0.0001 (reference)
    # none | imagenet (torchvision's weights API) | path to a torchvision-layout VGG16 state dict
    pretrained: str = "imagenet"
    # how the encoder weights expect their input: torchvision (RGB, [0,1], ImageNet mean/std)
    # or caffe (BGR, 0-255, mean subtraction only); preprocessing always follows this
    weights_style: str = "torchvision"
    init_from: str | None = None  # a checkpoint whose network weights start this run (stage 2)


@dataclass
class ProposalConfig:
    # edgeboxes | selective_search | file | ground_truth (oracle boxes from the annotations)
    method: str = "edgeboxes"
    top_k: int = 50  # proposals kept per image, by score
    min_size: int = 112  # boxes with min(w, h) below this are dropped (official scripts)
    max_candidates: int = 2000  # EdgeBoxes' maxBoxes before filtering
    edge_model: str | None = None  # structured-edge model.yml.gz; None: edge map computed in-process
    file: str | None = None  # method=file: precomputed boxes
    cache_dir: str = "${data.root}/proposals"
    workers: int = 0  # processes for precomputation; 0: all cores
    # splits `deconvnet proposals` computes; empty: data.train_split, data.val_split, eval.split
    splits: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    root: str = "data"  # holds VOCdevkit/VOC2012 and, for train_aug, benchmark_RELEASE (SBD)
    kind: str = "stage1"  # stage1 | stage2 | whole
    train_split: str = "train_aug"
    val_split: str = "val"
    window_size: int = 250  # windows are resized to this ...
    crop_size: int = 224  # ... then randomly cropped to this for training
    box_scale: float = 1.2  # stage 1: the tight instance box is enlarged by this factor
    balance_classes: bool = True  # stage 1: duplicate examples so every class is equally frequent
    iou_threshold: float = 0.5  # stage 2: proposal windows kept if IoU with a GT box >= this
    max_image_size: int | None = None  # whole images: longer side capped (None: original size)
    batch_size: int = 64  # global batch, split across devices (and accumulated if needed)
    per_device_batch_size: int | None = None  # None: batch_size / devices, no accumulation
    num_workers: int = 4
    proposals: ProposalConfig = field(default_factory=ProposalConfig)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    bias_lr_factor: float = 2.0  # Caffe's lr_mult 2 on biases
    bias_weight_decay: float = 0.0  # Caffe's decay_mult 0 on biases
    loss_normalization: str = "valid"  # valid (mean over non-void pixels) | sum (FCN reference)


@dataclass
class ScheduleConfig:
    policy: str = "step"  # step (official solver) | plateau (paper) | constant
    max_steps: int = 20000  # optimiser steps (Caffe iterations of the global batch)
    step_size: int = 9000  # step policy: lr x gamma every step_size steps
    gamma: float = 0.1
    plateau_patience: int = 3  # plateau policy: validations without pixel-accuracy gain
    val_every_n_steps: int = 1000
    precise_bn_batches: int = 100  # BN statistics re-estimated on this many training batches


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # ddp, ddp_spawn, ...
    precision: str = "32-true"  # bf16-mixed on GPUs
    channels_last: bool = False
    log_every_n_steps: int = 20
    limit_val_batches: Any = 1.0
    deterministic: bool = False


@dataclass
class LoggerConfig:
    project: str = "deconvnet"
    entity: str | None = None
    mode: str = "auto"  # auto (online if logged in, else offline) | online | offline | disabled
    tags: list[str] = field(default_factory=list)
    log_images: int = 4  # sample predictions logged per validation / evaluation


@dataclass
class CRFConfig:
    enabled: bool = True
    preset: str = "official"  # official | deeplab | custom (the values below)
    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_weight: float = 3.0
    bilateral_sxy: float = 20.0
    bilateral_srgb: float = 3.0
    bilateral_weight: float = 5.0
    workers: int = 0  # CRF processes; 0: all cores


@dataclass
class EvalConfig:
    split: str = "val"  # val (scored) | test (server archive only)
    deconvnet_checkpoint: str | None = None
    fcn_checkpoint: str | None = None
    num_proposals: int = 50
    aggregation: str = "max"  # max (eq. 1, official) | sum (eq. 2)
    ensemble: str = "mean"  # mean of probabilities (paper) | product of scores (official code)
    proposal_batch_size: int = 64  # windows per DeconvNet forward
    # proposals squared around their centre, as the stage-2 training windows are; false: the
    # raw box, resized to the input with its aspect ratio distorted
    window_square: bool = True
    save_probabilities: bool = False  # cache probability maps to re-run the CRF alone
    probabilities_dir: str | None = None  # CRF-only evaluation from a cache written earlier
    write_predictions: bool = False  # label PNGs per method (always on for split=test)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    task: str = "deconvnet"  # deconvnet | fcn8s | ensemble
    output_dir: str = "outputs/${name}"
    seed: int = 0
    resume: str = "auto"  # auto (latest checkpoint in output_dir) | never | a checkpoint path
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def schema() -> DictConfig:
    """The structured default config: every valid key, typed."""
    return OmegaConf.structured(ExperimentConfig)


def valid_keys(node: Any = None, prefix: str = "") -> list[str]:
    """All dotted keys of the schema (leaves and sections)."""
    node = schema() if node is None else node
    keys = []
    for key in node:
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        child = node[key] if OmegaConf.is_config(node) else None
        if OmegaConf.is_dict(child):
            keys.extend(valid_keys(child, dotted + "."))
    return keys


def _closest(key: str) -> str:
    candidates = valid_keys()
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = [k for k in candidates if k.rsplit(".", 1)[-1] == leaf]
    best = by_leaf[0] if by_leaf else (match[0] if match else None)
    return f" Did you mean '{best}'?" if best else ""


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """Read one YAML file with its bases merged in (bases first)."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in seen:
        raise ConfigError(f"config bases form a cycle: {' -> '.join(map(str, seen + (path,)))}")
    try:
        node = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    bases = node.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / base, seen + (path,)))
    return OmegaConf.merge(merged, node)


def _merge_checked(base: DictConfig, update: Any, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = getattr(err, "full_key", None) or str(err)
        raise ConfigError(f"{where}: unknown config key '{key}'.{_closest(str(key))}") from None
    except ValidationError as err:
        key = getattr(err, "full_key", "")
        raise ConfigError(f"{where}: bad value for '{key}': {err.msg}") from None


def parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(
                f"override '{item}' is not of the form key=value (for example optim.lr=0.001)"
            )
    # W&B agents pass `--key=value` when told ${args}; accept both spellings.
    cleaned = [item[2:] if item.startswith("--") else item for item in overrides]
    try:
        return OmegaConf.from_dotlist(cleaned)
    except Exception as err:
        raise ConfigError(f"could not parse overrides {overrides}: {err}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file (with its bases) <- dotted overrides; validated and resolved."""
    cfg = schema()
    if path is not None:
        cfg = _merge_checked(cfg, _read_yaml(Path(path)), str(path))
    if overrides:
        cfg = _merge_checked(cfg, parse_overrides(overrides), "command line")
    try:
        OmegaConf.resolve(cfg)
    except Exception as err:
        raise ConfigError(f"could not resolve interpolations in {path}: {err}") from None
    return cfg


def git_revision() -> str:
    """The source tree's commit (with '-dirty' if it has uncommitted changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Write the resolved config (with the git revision) as output_dir/config.yaml, atomically."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from deconvnet.runtime.atomic import write_text_atomic  # unique temporary name

    text = f"# git revision: {git_revision()}\n" + OmegaConf.to_yaml(cfg, resolve=True)
    return write_text_atomic(out / "config.yaml", text)


def to_dict(cfg: DictConfig) -> dict:
    """Plain dict (for W&B run configs)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
