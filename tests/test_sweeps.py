"""W&B sweep files: every swept key exists in the schema, and the exact command line an
agent builds (sampled values through wandb's own argument formatting) runs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from deconvnet.cli import main
from deconvnet.config import load_config, valid_keys

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


def sample(spec: dict, rng: random.Random):
    """One value of a sweep parameter, as the sweep controller would draw it."""
    if "values" in spec:
        return rng.choice(spec["values"])
    if "value" in spec:
        return spec["value"]
    low, high = spec["min"], spec["max"]
    kind = spec.get("distribution", "uniform")
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    value = rng.uniform(low, high)
    if kind.startswith("q_"):
        value = round(value / spec.get("q", 1)) * spec.get("q", 1)
    if kind.startswith("int") or (isinstance(low, int) and isinstance(high, int) and kind == "int_uniform"):
        value = int(value)
    return value


def agent_command(sweep: dict, values: dict, program: str) -> list[str]:
    """The argv `wandb agent` runs for these values (mirrors wandb_agent's substitution)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    args.update({"env": ["/usr/bin/env"], "program": [program]})
    argv: list[str] = []
    for item in create_sweep_command(list(sweep["command"])):
        item = str(item)
        if item.startswith("${") and item.endswith("}"):
            argv += args.get(item[2:-1]) or []
        else:
            argv.append(item)
    return argv


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_swept_parameter_is_a_config_key(path: Path):
    sweep = yaml.safe_load(path.read_text())
    keys = set(valid_keys())
    assert sweep["parameters"], f"{path.name} sweeps nothing"
    for key in sweep["parameters"]:
        assert key in keys, f"{path.name}: '{key}' is not a config key"
    assert "${args_no_hyphens}" in sweep["command"], "values must reach deconvnet as key=value"
    assert sweep["metric"]["name"] and sweep["metric"]["goal"] in ("maximize", "minimize")
    assert (REPO / sweep["program"]).is_file(), f"{path.name}: program {sweep['program']} missing"
    # the sampled values must load through the schema (types included)
    rng = random.Random(0)
    values = {k: sample(v, rng) for k, v in sweep["parameters"].items()}
    cfg = load_config(REPO / sweep["program"], [f"{k}={v}" for k, v in values.items()])
    for key, value in values.items():
        assert OmegaConf.select(cfg, key) == pytest.approx(value)


def _run_as_agent(path: Path, extra: list[str], monkeypatch, tmp_path: Path) -> tuple[dict, Path]:
    sweep = yaml.safe_load(path.read_text())
    values = {k: sample(v, random.Random(1)) for k, v in sweep["parameters"].items()}
    argv = agent_command(sweep, values, str(REPO / sweep["program"]))
    assert argv[:2] == ["/usr/bin/env", "deconvnet"]
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    monkeypatch.setenv("WANDB_RUN_ID", "run1")
    monkeypatch.chdir(tmp_path)
    assert main(argv[2:] + extra) == 0
    out = tmp_path / "outputs" / "sweeps" / "sweep1" / "run1"
    return values, out


@pytest.mark.slow
def test_stage1_sweep_command_trains_with_the_sampled_values(synthetic_voc, offline_wandb, monkeypatch, tmp_path):
    tiny = [f"data.root={synthetic_voc}", "data.train_split=train", "data.val_split=val",
            "data.batch_size=4", "data.num_workers=0", "model.width=0.0625", "model.pretrained=none",
            "model.input_size=64", "data.window_size=72", "data.crop_size=64",
            "schedule.max_steps=2", "schedule.val_every_n_steps=2", "schedule.precise_bn_batches=1",
            "trainer.accelerator=cpu", "trainer.devices=1", "trainer.limit_val_batches=1",
            "logger.mode=disabled"]
    values, out = _run_as_agent(REPO / "configs/sweeps/stage1_lr_wd.yaml", tiny, monkeypatch, tmp_path)
    assert (out / "checkpoints" / "final.ckpt").is_file()
    saved = load_config(out / "config.yaml")
    assert saved.optim.lr == pytest.approx(values["optim.lr"])
    assert saved.optim.weight_decay == pytest.approx(values["optim.weight_decay"])


@pytest.mark.slow
def test_crf_sweep_command_rescores_cached_probabilities(synthetic_voc, tiny_checkpoints, offline_wandb,
                                                         monkeypatch, tmp_path):
    from deconvnet.metrics import METHODS, read_results_csv

    common = [f"data.root={synthetic_voc}", f"data.proposals.cache_dir={tmp_path}/proposals",
              "data.proposals.min_size=16", "data.proposals.workers=1", "data.num_workers=0",
              "trainer.accelerator=cpu", "trainer.devices=1", "crf.workers=1",
              "logger.mode=disabled", "logger.log_images=0"]
    cache_run = tmp_path / "outputs" / "table1-eval"
    assert main(["eval", str(REPO / "experiments/table1/eval.yaml"), f"output_dir={cache_run}",
                 f"eval.deconvnet_checkpoint={tiny_checkpoints['deconvnet']}",
                 f"eval.fcn_checkpoint={tiny_checkpoints['fcn8s']}",
                 "eval.save_probabilities=true", *common]) == 0
    values, out = _run_as_agent(REPO / "configs/sweeps/crf.yaml", common, monkeypatch, tmp_path)
    rows = read_results_csv(out / "results.csv")
    assert {"DeconvNet+CRF", "EDeconvNet+CRF"} <= set(rows) <= set(METHODS)
    saved = load_config(out / "config.yaml")
    assert saved.crf.preset == "custom"
    assert saved.crf.bilateral_sxy == pytest.approx(values["crf.bilateral_sxy"])
