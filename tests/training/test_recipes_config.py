"""The recipes in experiments/ load with the paper's values; training-config errors are clear."""

import pytest

from deconvnet.cli import main
from deconvnet.config import ConfigError, load_config
from deconvnet.training.run import validate_training_config, world_size

from .conftest import EXPERIMENTS

# the training recipes (experiments/ also holds evaluation recipes, tested with the evaluator)
RECIPES = [EXPERIMENTS / f"{suite}/{stage}.yaml"
           for suite in ("table1", "demo") for stage in ("stage1", "stage2", "fcn8s")]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_loads_and_is_consistent(recipe):
    cfg = load_config(recipe)
    validate_training_config(cfg)
    assert cfg.name == f"{recipe.parent.name}-{recipe.stem}"
    assert cfg.output_dir == f"outputs/{cfg.name}"


def test_table1_recipes_are_the_papers():
    s1 = load_config(EXPERIMENTS / "table1/stage1.yaml")
    assert (s1.task, s1.data.kind, s1.model.width, s1.model.input_size) == ("deconvnet", "stage1", 1.0, 224)
    assert (s1.optim.name, s1.optim.lr, s1.optim.momentum, s1.optim.weight_decay) == ("sgd", 0.01, 0.9, 0.0005)
    assert (s1.optim.bias_lr_factor, s1.optim.bias_weight_decay, s1.optim.loss_normalization) == (2.0, 0.0, "valid")
    assert (s1.schedule.policy, s1.schedule.step_size, s1.schedule.max_steps, s1.schedule.gamma) == (
        "step", 9000, 20000, 0.1)
    assert (s1.data.batch_size, s1.data.window_size, s1.data.crop_size, s1.data.context_scale) == (64, 250, 224, 1.2)
    assert s1.trainer.precision == "32-true"

    s2 = load_config(EXPERIMENTS / "table1/stage2.yaml")
    assert (s2.data.kind, s2.schedule.step_size, s2.schedule.max_steps) == ("stage2", 10000, 40000)
    assert s2.model.init_from == "outputs/table1-stage1/checkpoints/final.ckpt"
    assert s2.data.batch_size == 64 and s2.optim.lr == 0.01

    fcn = load_config(EXPERIMENTS / "table1/fcn8s.yaml")
    assert (fcn.task, fcn.model.name, fcn.data.kind, fcn.data.batch_size) == ("fcn8s", "fcn8s", "whole", 1)
    assert (fcn.optim.lr, fcn.optim.momentum, fcn.optim.loss_normalization) == (1e-10, 0.99, "sum")
    assert fcn.schedule.policy == "constant"


def test_demo_recipes_are_small_and_chained():
    s1 = load_config(EXPERIMENTS / "demo/stage1.yaml")
    s2 = load_config(EXPERIMENTS / "demo/stage2.yaml")
    assert s1.model.width < 1 and s1.model.input_size == s1.data.crop_size < 224
    assert s1.trainer.accelerator == "cpu" and s1.optim.name == "adam"
    assert s2.model.init_from == f"{s1.output_dir}/checkpoints/final.ckpt"
    assert (s2.model.width, s2.model.input_size) == (s1.model.width, s1.model.input_size)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task=fcn8s"], r"model\.name"),
        (["schedule.policy=cosine"], r"schedule\.policy=cosine .*step, plateau, constant"),
        (["optim.loss_normalization=mean"], r"optim\.loss_normalization"),
        (["logger.mode=cloud"], r"logger\.mode"),
        (["data.kind=whole"], r"data\.kind=stage1 or stage2"),
        (["data.crop_size=200"], r"data\.crop_size=200 must equal model\.input_size=224"),
        (["schedule.max_steps=0"], r"schedule\.max_steps=0 .* must be >= 1"),
        (["data.window_size=200"], r"data\.window_size \(200\) must be >= data\.crop_size \(224\)"),
    ],
)
def test_training_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_training_config(load_config(EXPERIMENTS / "table1/stage1.yaml", overrides))


def test_cli_reports_config_errors_without_traceback(capsys):
    recipe = str(EXPERIMENTS / "demo/stage1.yaml")
    assert main(["train", recipe, "optim.lrr=0.1"]) == 2
    assert "Did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(["train", recipe, "schedule.max_steps"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["train", recipe, "resume=/nonexistent/x.ckpt"]) == 2
    assert "resume='/nonexistent/x.ckpt'" in capsys.readouterr().err


def test_world_size_follows_devices_and_nodes():
    base = load_config(None, ["trainer.accelerator=cpu"]).trainer
    assert world_size(base) == 1  # devices=auto on CPU: one process
    assert world_size(load_config(None, ["trainer.devices=2", "trainer.num_nodes=3"]).trainer) == 6
    assert world_size(load_config(None, ["trainer.devices=[0,1,2]"]).trainer) == 3


def test_a_missing_init_from_stops_training_before_anything_is_written(tmp_path, capsys):
    out, data, missing = tmp_path / "out", tmp_path / "data", tmp_path / "stage1.ckpt"
    assert main(["train", str(EXPERIMENTS / "demo/stage2.yaml"), f"output_dir={out}",
                 f"model.init_from={missing}", f"data.root={data}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"deconvnet train: error: model.init_from: checkpoint not found: {missing}. "
        "Train that network first (deconvnet train ...) or fix the path.")
    assert not out.exists() and not data.exists()  # no run folder, no synthetic set
