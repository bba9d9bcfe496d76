"""Experiment configuration: a typed OmegaConf schema, YAML composition and overrides.

A config file is YAML. It may name other files to build on:

    _base_: [../../configs/model/deconvnet.yaml, ../../configs/data/stage1.yaml]
    name: table1-stage1
    optim: {lr: 0.01}

Bases are merged in order (paths relative to the file that names them, and they may
have bases of their own), then the file itself, then the command line's dotted
``key=value`` overrides. Everything is validated against :class:`ExperimentConfig`:
an unknown key is an error that names the closest valid key, a value of the wrong type,
outside its range (``at_least``, ``above``) or outside its choices (``choice``) is an
error that names the key and what it accepts. The schema is the one place that says
which values a key takes; the code that uses a value does not check it again.

Defaults are the paper's values (PAPER.md); deviations are options.
"""

from __future__ import annotations

import difflib
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from deconvnet.errors import UserError

BASE_KEY = "_base_"


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message says how to fix it."""


# Lightning's precision names (lightning.fabric.connector._PRECISION_INPUT; a test keeps them equal)
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed",
              "bf16-true", "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def choice(default: str, allowed: tuple[str, ...]) -> Any:
    """A string field that only takes the values ``allowed`` (checked by :func:`load_config`)."""
    assert default in allowed
    return field(default=default, metadata={"choices": allowed})


def at_least(default: Any, minimum: float) -> Any:
    """A number field (or None where the type allows) that must be >= ``minimum``."""
    return field(default=default, metadata={"at_least": minimum})


def above(default: Any, bound: float) -> Any:
    """A number field (or None where the type allows) that must be > ``bound``."""
    return field(default=default, metadata={"above": bound})


@dataclass
class ModelConfig:
    name: str = choice("deconvnet", ("deconvnet", "fcn8s"))
    num_classes: int = at_least(21, 2)
    input_size: int = at_least(224, 32)  # DeconvNet only: the fc6 kernel follows it (input / 32)
    width: float = above(1.0, 0)  # channel multiplier; < 1 for tests and the CPU demo
    classifier_std: float = above(0.01, 0)  # DeconvNet classifier init N(0, std); paper 0.01
    fcn_batch_norm: bool = False  # FCN-8s: BatchNorm after each VGG conv (not the reference)
    fcn_skip_scaling: bool = True  # FCN-8s at-once: pool4 x 0.01, pool3 x 0.0001 (reference)
    # none | imagenet (torchvision's weights API) | path to a torchvision-layout VGG16 state dict
    pretrained: str = "imagenet"
    # how the encoder weights expect their input: torchvision (RGB, [0,1], ImageNet mean/std)
    # or caffe (BGR, 0-255, mean subtraction only); preprocessing always follows this
    weights_style: str = choice("torchvision", ("torchvision", "caffe"))
    init_from: str | None = None  # a checkpoint whose network weights start this run (stage 2)


@dataclass
class ProposalConfig:
    # edgeboxes | selective_search | file | ground_truth (oracle boxes from the annotations)
    method: str = choice("edgeboxes", ("edgeboxes", "selective_search", "file", "ground_truth"))
    top_k: int = at_least(50, 1)  # proposals kept per image, by score (evaluation)
    # stage 2: the top proposals of each training image that are candidates
    train_top_k: int = at_least(50, 1)
    # proposals whose window (or box) has min(w, h) below this are dropped
    min_size: int = at_least(112, 0)
    # window (the extended box: official scripts) | box (the raw box)
    min_size_on: str = choice("window", ("window", "box"))
    # true: the boxes are already extended windows (the official cached EdgeBoxes), so the
    # window rule does not enlarge them again (it still squares them, a no-op on squares)
    extended: bool = False
    max_candidates: int = at_least(2000, 1)  # EdgeBoxes' maxBoxes before filtering
    # Structured Edge model for EdgeBoxes (the paper's edges): auto (${data.root}/models/
    # model.yml.gz when it exists, else `edge_fallback` with one warning) | a path | null
    # (no model: `edge_fallback` without a warning)
    edge_model: str | None = "auto"
    # without a model file: gradient (EdgeBoxes on in-process gradient edges) | selective_search
    edge_fallback: str = choice("gradient", ("gradient", "selective_search"))
    file: str | None = None  # method=file: precomputed boxes
    cache_dir: str = "${data.root}/proposals"
    workers: int = at_least(0, 0)  # processes for precomputation; 0: all cores
    # splits `deconvnet proposals` computes; empty: data.train_split, data.val_split, eval.split
    splits: list[str] = field(default_factory=list)


@dataclass
class SyntheticConfig:
    """The arguments of `deconvnet synth` that make a recipe's synthetic data set."""

    images: int = at_least(200, 2)
    size: int | None = at_least(None, 32)  # longer image side; None: VOC-like, up to 500
    seed: int = 0


@dataclass
class DataConfig:
    root: str = "data"  # holds VOCdevkit/VOC2012 and, for train_aug, benchmark_RELEASE (SBD)
    kind: str = choice("stage1", ("stage1", "stage2", "whole"))
    train_split: str = "train_aug"
    val_split: str = "val"
    window_size: int = at_least(250, 1)  # windows are resized to this ...
    crop_size: int = at_least(224, 1)  # ... then randomly cropped to this for training
    # the window rule (stage 1, stage 2, inference): box x context_scale about its centre ...
    context_scale: float = above(1.2, 0)
    # ... then the smallest square holding it (the object keeps its aspect)
    square_windows: bool = True
    # duplicate examples so every class is equally frequent (both stages)
    balance_classes: bool = True
    # stage 2: proposals kept if IoU(proposal box, a GT box) >= this
    iou_threshold: float = at_least(0.5, 0)
    # stage 2: false (paper) = proposal windows only; true = the stage-1 examples plus them (seed)
    stage2_include_stage1: bool = False
    # whole images: longer side capped (None: original size)
    max_image_size: int | None = at_least(None, 1)
    # global batch, split across devices (and accumulated if needed)
    batch_size: int = at_least(64, 1)
    # None: batch_size / devices, no accumulation
    per_device_batch_size: int | None = at_least(None, 1)
    # DataLoader worker processes per device; 0: in the main process
    num_workers: int = at_least(4, 0)
    # how `deconvnet pipeline` checks the splits first: headers (files, sizes) | full (decodes
    # every image and mask: truncated files, label values; see deconvnet.data.check)
    check: str = choice("headers", ("headers", "full"))
    # the synthetic set this recipe was made for (None: real data); made when missing
    synthetic: SyntheticConfig | None = None
    # decoded store: images and masks decoded once into memory-mapped uint8 arrays under
    # cache_dir (`deconvnet cache`, or built on first use); false: decode the files per item
    store: bool = True
    cache_dir: str = "${data.root}/cache"
    # windows: workers (cut with OpenCV in the loader workers) | device (the loader hands over
    # window descriptions; the training module cuts them on the device; needs store=true)
    pipeline: str = choice("workers", ("workers", "device"))
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    # stage 1/2 windows: voc (built from the annotations of data.root) | official (the release's
    # VOC_OBJECT / VOC2012_SEG_AUG training lists under data.official_root, read as they are)
    source: str = choice("voc", ("voc", "official"))
    official_root: str = "${data.root}/official"


@dataclass
class OptimConfig:
    name: str = choice("sgd", ("sgd", "adam"))
    lr: float = above(0.01, 0)
    momentum: float = at_least(0.9, 0)
    weight_decay: float = at_least(0.0005, 0)
    bias_lr_factor: float = at_least(2.0, 0)  # Caffe's lr_mult 2 on biases
    bias_weight_decay: float = at_least(0.0, 0)  # Caffe's decay_mult 0 on biases
    # BatchNorm scale/shift decay; null: optim.weight_decay, as Caffe (the official BN layers
    # declare no decay_mult, so they get 1); 0: not decayed (common PyTorch practice)
    bn_weight_decay: float | None = at_least(None, 0)
    # valid (mean over non-void pixels) | sum (FCN reference)
    loss_normalization: str = choice("valid", ("valid", "sum"))


@dataclass
class ScheduleConfig:
    # step (official solver) | plateau (paper) | constant
    policy: str = choice("step", ("step", "plateau", "constant"))
    max_steps: int = at_least(20000, 1)  # optimiser steps (Caffe iterations of the global batch)
    step_size: int = at_least(9000, 1)  # step policy: lr x gamma every step_size steps
    gamma: float = above(0.1, 0)
    plateau_patience: int = at_least(3, 0)  # plateau policy: validations without pixel-accuracy gain
    val_every_n_steps: int = at_least(1000, 1)
    precise_bn_batches: int = at_least(100, 0)  # BN statistics re-estimated on this many training batches


@dataclass
class TrainerConfig:
    accelerator: str = choice("auto", ACCELERATORS)  # availability: runtime.hardware
    devices: Any = "auto"
    num_nodes: int = at_least(1, 1)
    strategy: str = "auto"  # ddp, ddp_spawn, ...
    precision: str = choice("32-true", PRECISIONS)  # bf16-mixed on GPUs
    channels_last: bool = False
    log_every_n_steps: int = at_least(20, 1)
    limit_val_batches: Any = 1.0
    deterministic: bool = False


@dataclass
class LoggerConfig:
    project: str = "deconvnet"
    entity: str | None = None
    # auto (online if logged in, else offline) | online | offline | disabled
    mode: str = choice("auto", ("auto", "online", "offline", "disabled"))
    tags: list[str] = field(default_factory=list)
    log_images: int = at_least(4, 0)  # sample predictions logged per validation / evaluation


@dataclass
class CRFConfig:
    """The dense CRF. The numbers below are the official DeconvNet release's (PAPER.md): the
    ``official`` preset of deconvnet.inference.crf is read from here, nowhere else."""

    enabled: bool = True
    # official | deeplab (DeepLab-CRF's VOC values) | custom (the values below)
    preset: str = choice("official", ("official", "deeplab", "custom"))
    iterations: int = at_least(10, 1)
    gaussian_sxy: float = above(3.0, 0)
    gaussian_weight: float = at_least(3.0, 0)
    bilateral_sxy: float = above(20.0, 0)
    bilateral_srgb: float = above(3.0, 0)
    bilateral_weight: float = at_least(5.0, 0)
    workers: int = at_least(0, 0)  # CRF processes; 0: all cores


@dataclass
class EvalConfig:
    split: str = "val"  # val (scored) | test (server archive only) | any split list
    deconvnet_checkpoint: str | None = None
    fcn_checkpoint: str | None = None
    num_proposals: int = at_least(50, 1)
    aggregation: str = choice("max", ("max", "sum"))  # max (eq. 1, official) | sum (eq. 2)
    # mean of probabilities (paper) | product of scores (official code)
    ensemble: str = choice("mean", ("mean", "product"))
    proposal_batch_size: int = at_least(64, 1)  # windows per DeconvNet forward
    save_probabilities: bool = False  # cache probability maps to re-run the CRF alone
    probabilities_dir: str | None = None  # CRF-only evaluation from a cache written earlier
    write_predictions: bool = False  # label PNGs per method (always on for split=test)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    task: str = "${model.name}"  # the network trained: always model.name (set that instead)
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


_SECTIONS = (ModelConfig, ProposalConfig, SyntheticConfig, DataConfig, OptimConfig, ScheduleConfig,
             TrainerConfig, LoggerConfig, CRFConfig, EvalConfig, ExperimentConfig)


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


def _fmt_allowed(values: tuple) -> str:
    return ", ".join(str(v) for v in values)


def _check_value(key: str, value: Any, rules: dict) -> None:
    if value is None:
        return  # an optional field left unset; non-optional ones cannot be None (OmegaConf)
    if "choices" in rules and str(value) not in rules["choices"]:
        close = difflib.get_close_matches(str(value), rules["choices"], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key}={value} is not one of the allowed values: "
                          f"{_fmt_allowed(rules['choices'])}{hint}")
    if "at_least" in rules and not value >= rules["at_least"]:
        raise ConfigError(f"{key}={value} is out of range: it must be >= {rules['at_least']}")
    if "above" in rules and not value > rules["above"]:
        raise ConfigError(f"{key}={value} is out of range: it must be > {rules['above']}")


def validate(cfg: DictConfig, section: type = None, prefix: str = "") -> None:
    """Check every value against its field's rules (``choice``, ``at_least``, ``above``) and
    the keys derived from others; raises ConfigError naming the key and what it accepts."""
    section = ExperimentConfig if section is None else section
    for f in fields(section):
        value = cfg[f.name]
        key = f"{prefix}{f.name}"
        sub = _dataclass_of(f.type)
        if sub is not None:
            if value is not None:
                validate(value, sub, key + ".")
            continue
        _check_value(key, value, dict(f.metadata))
    if section is ExperimentConfig and cfg.task != cfg.model.name:
        raise ConfigError(
            f"task={cfg.task} differs from model.name={cfg.model.name}: task always follows "
            f"model.name; remove task from the config and set model.name={cfg.task} instead"
        )


def _dataclass_of(annotation: str) -> type | None:
    """The config section a field holds (also for ``Section | None``), else None. Field
    types are strings here (``from __future__ import annotations``)."""
    sections = {cls.__name__: cls for cls in _SECTIONS}
    return sections.get(str(annotation).split("|")[0].strip())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file (with its bases) <- dotted overrides; resolved, then
    validated (:func:`validate`)."""
    cfg = schema()
    if path is not None:
        cfg = _merge_checked(cfg, _read_yaml(Path(path)), str(path))
    if overrides:
        cfg = _merge_checked(cfg, parse_overrides(overrides), "command line")
    try:
        OmegaConf.resolve(cfg)
    except Exception as err:
        raise ConfigError(f"could not resolve interpolations in {path}: {err}") from None
    validate(cfg)
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
