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
