"""The config schema: composition, overrides and the errors users see."""

from pathlib import Path

import pytest

from deconvnet.config import ConfigError, load_config, save_config, valid_keys


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.model.num_classes == 21 and cfg.model.input_size == 224
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.01, 0.9, 0.0005)
    assert (cfg.schedule.step_size, cfg.schedule.max_steps, cfg.schedule.gamma) == (9000, 20000, 0.1)
    assert cfg.data.batch_size == 64 and cfg.data.window_size == 250 and cfg.data.crop_size == 224
    assert cfg.data.proposals.top_k == 50 and cfg.data.proposals.min_size == 112
    assert cfg.eval.aggregation == "max" and cfg.eval.ensemble == "mean"
    assert (cfg.crf.bilateral_sxy, cfg.crf.bilateral_srgb, cfg.crf.bilateral_weight) == (20, 3, 5)


def test_bases_merge_in_order_then_file_then_overrides(tmp_path):
    write(tmp_path / "parts/a.yaml", "optim: {lr: 0.1, momentum: 0.5}\nname: a\n")
    write(tmp_path / "parts/b.yaml", "_base_: a.yaml\noptim: {lr: 0.2}\n")
    exp = write(tmp_path / "exp/run.yaml", "_base_: [../parts/b.yaml]\nname: run\n")
    cfg = load_config(exp, ["optim.weight_decay=0.001"])
    assert cfg.optim.lr == 0.2 and cfg.optim.momentum == 0.5
    assert cfg.optim.weight_decay == 0.001
    assert cfg.name == "run" and cfg.output_dir == "outputs/run"


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(None, ["optim.lrr=0.1"])
    exp = write(tmp_path / "bad.yaml", "schedule: {max_step: 10}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*schedule\.max_steps"):
        load_config(exp)


def test_bad_values_and_syntax_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    cyc = write(tmp_path / "c.yaml", "_base_: c.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(cyc)


def test_sweep_agent_spelling_is_accepted():
    cfg = load_config(None, ["--optim.lr=0.003"])
    assert cfg.optim.lr == 0.003


def test_saved_config_round_trips_with_revision(tmp_path):
    cfg = load_config(None, ["name=x", "optim.lr=0.02"])
    path = save_config(cfg, tmp_path / "out")
    text = path.read_text()
    assert text.startswith("# git revision: ")
    assert load_config(path).optim.lr == 0.02
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_valid_keys_cover_nested_sections():
    keys = valid_keys()
    assert "data.proposals.top_k" in keys and "crf.bilateral_srgb" in keys


# ---- one truth in the schema: choices, ranges, derived keys, fragments -------------------

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=-0.1", r"optim\.lr=-0\.1 is out of range: it must be > 0"),
        ("optim.lr=0", r"optim\.lr=0\.0 is out of range: it must be > 0"),
        ("data.num_workers=-2", r"data\.num_workers=-2 is out of range: it must be >= 0"),
        ("data.batch_size=0", r"data\.batch_size=0 .* >= 1"),
        ("data.proposals.top_k=0", r"data\.proposals\.top_k=0 .* >= 1"),
        ("crf.workers=-1", r"crf\.workers=-1 .* >= 0"),
        ("trainer.precision=foo", r"trainer\.precision=foo is not one of .*bf16-mixed.*32-true"),
        ("trainer.accelerator=gpus", r"trainer\.accelerator=gpus .*auto, cpu, gpu.*did you mean gpu"),
        ("optim.name=adamw", r"optim\.name=adamw is not one of the allowed values: sgd, adam"),
        ("eval.aggregation=mean", r"eval\.aggregation=mean .* max, sum"),
        ("eval.ensemble=max", r"eval\.ensemble=max .* mean, product"),
        ("data.kind=stage3", r"data\.kind=stage3 .* stage1, stage2, whole"),
        ("data.check=deep", r"data\.check=deep .* headers, full"),
        ("data.proposals.method=sliding", r"data\.proposals\.method=sliding .*edgeboxes"),
        ("model.weights_style=bgr", r"model\.weights_style=bgr .* torchvision, caffe"),
        ("logger.mode=cloud", r"logger\.mode=cloud .* auto, online, offline, disabled"),
        ("crf.preset=fancy", r"crf\.preset=fancy .* official, deeplab, custom"),
        ("data.synthetic.images=1", r"data\.synthetic\.images=1 .* >= 2"),
    ],
)
def test_load_config_rejects_bad_values_naming_the_key_and_what_it_takes(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_values_at_the_edge_of_their_range_are_accepted():
    cfg = load_config(None, ["data.num_workers=0", "crf.workers=0", "trainer.precision=bf16-mixed",
                             "trainer.precision=16", "optim.lr=1e-10", "data.check=full"])
    assert (cfg.data.num_workers, cfg.trainer.precision, cfg.data.check) == (0, "16", "full")


def test_bad_value_in_a_file_is_refused_too(tmp_path):
    exp = write(tmp_path / "exp.yaml", "optim: {lr: -1}\n")
    with pytest.raises(ConfigError, match=r"optim\.lr=-1\.0"):
        load_config(exp)


def test_schema_choices_are_the_codes_registries():
    """The schema names the allowed values; the code that acts on them must know exactly those."""
    import dataclasses
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT

    from deconvnet.config import ExperimentConfig
    from deconvnet.data.datamodules import DATAMODULES
    from deconvnet.data.proposals.generators import METHODS
    from deconvnet.inference.crf import PRESETS
    from deconvnet.inference.instance import AGGREGATIONS
    from deconvnet.inference.predictor import ENSEMBLES
    from deconvnet.models.normalize import WEIGHT_STYLES
    from deconvnet.runtime.wandb_setup import LOGGER_MODES
    from deconvnet.training.losses import LOSS_NORMALIZATIONS
    from deconvnet.training.optim import OPTIMIZERS, SCHEDULES
    from deconvnet.training.segmentation_module import MODULES

    def choices(section: str, key: str) -> set[str]:
        node = ExperimentConfig
        for part in section.split("."):
            node = {f.name: f for f in dataclasses.fields(node)}[part].default_factory
        return set({f.name: f for f in dataclasses.fields(node)}[key].metadata["choices"])

    assert choices("model", "name") == set(MODULES)
    assert choices("model", "weights_style") == set(WEIGHT_STYLES)
    assert choices("data", "kind") == set(DATAMODULES)
    assert choices("data.proposals", "method") == set(METHODS)
    assert choices("optim", "name") == set(OPTIMIZERS)
    assert choices("optim", "loss_normalization") == set(LOSS_NORMALIZATIONS)
    assert choices("schedule", "policy") == set(SCHEDULES)
    assert choices("logger", "mode") == set(LOGGER_MODES)
    assert choices("eval", "aggregation") == set(AGGREGATIONS)
    assert choices("eval", "ensemble") == set(ENSEMBLES)
    assert choices("crf", "preset") == set(PRESETS) | {"custom"}
    lightning_precisions = {str(v) for alias in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(alias)}
    assert choices("trainer", "precision") == lightning_precisions


def test_task_follows_model_name():
    assert load_config(None, ["model.name=fcn8s"]).task == "fcn8s"
    assert load_config(REPO / "experiments/table1/fcn8s.yaml").task == "fcn8s"
    assert load_config(REPO / "experiments/table1/stage1.yaml").task == "deconvnet"
    with pytest.raises(ConfigError, match=r"task=fcn8s differs from model\.name=deconvnet.*model\.name=fcn8s"):
        load_config(None, ["task=fcn8s"])


CONFIG_FILES = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "sweeps")


def _leaves(node, prefix=""):
    for key, value in node.items():
        if key == "_base_":
            continue
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_fragment_loads_and_sets_its_values(path):
    """Every file of configs/ (the sweeps have tests/test_sweeps.py) is a valid fragment: it
    loads against the schema, and each value it writes is what the loaded config holds."""
    import yaml
    from omegaconf import OmegaConf

    cfg = load_config(path)
    written = dict(_leaves(yaml.safe_load(path.read_text())))
    assert written, f"{path} sets nothing"
    for key, value in written.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_the_crf_presets_of_the_config_fragments():
    from deconvnet.inference.crf import crf_params

    deeplab = crf_params(load_config(REPO / "configs/crf/deeplab.yaml").crf)
    official = crf_params(load_config(REPO / "configs/crf/official.yaml").crf)
    assert (deeplab.bilateral_sxy, deeplab.bilateral_srgb, deeplab.bilateral_weight) == (121, 5, 4)
    assert (official.bilateral_sxy, official.bilateral_srgb, official.bilateral_weight) == (20, 3, 5)
    assert (official.gaussian_sxy, official.gaussian_weight, official.iterations) == (3, 3, 10)


def test_the_ddp_fragment_builds_on_the_gpu_one():
    cfg = load_config(REPO / "configs/trainer/ddp.yaml")
    assert (cfg.trainer.accelerator, cfg.trainer.strategy, cfg.trainer.devices) == ("gpu", "ddp", "auto")


@pytest.mark.parametrize("suite", ["table1", "demo"])
def test_stage2_and_eval_read_one_proposal_cache(suite):
    """Both recipes include one proposals fragment: evaluation never computes a second cache."""
    from deconvnet.data.proposals.cache import cache_path
    from deconvnet.data.proposals.generators import build_generator
    from deconvnet.data.proposals.precompute import proposal_parameters

    stage2 = load_config(REPO / f"experiments/{suite}/stage2.yaml")
    evaluation = load_config(REPO / f"experiments/{suite}/eval.yaml")
    assert stage2.data.proposals == evaluation.data.proposals
    assert stage2.data.root == evaluation.data.root

    def path(cfg, split="val"):
        generator = build_generator(cfg)
        return cache_path(cfg.data.proposals.cache_dir, split, generator.method, proposal_parameters(cfg, generator))

    assert path(stage2) == path(evaluation)
    # and a setting changed in one recipe only would indeed change the cache
    assert path(load_config(REPO / f"experiments/{suite}/eval.yaml", ["data.proposals.top_k=7"])) != path(stage2)


def test_every_demo_recipe_names_the_same_synthetic_data():
    recipes = [load_config(REPO / f"experiments/demo/{n}.yaml") for n in ("stage1", "stage2", "fcn8s", "eval")]
    for cfg in recipes:
        assert cfg.data.root == "data/synthetic"
        assert dict(cfg.data.synthetic) == {"images": 240, "size": 160, "seed": 0}
    assert load_config(REPO / "experiments/table1/stage1.yaml").data.synthetic is None
