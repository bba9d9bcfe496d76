"""`deconvnet pipeline`: the paper's recipe folder end to end on the synthetic set (tiny
networks), every step in order, and a second run that finds everything done."""

from __future__ import annotations

from pathlib import Path

import pytest

from deconvnet.cli import main
from deconvnet.errors import UserError
from deconvnet.metrics import METHODS, read_results_csv
from deconvnet.pipeline import plan

REPO = Path(__file__).resolve().parents[1]
TABLE1 = REPO / "experiments" / "table1"


def test_plan_lists_the_recipe_steps_in_order():
    assert [s.name for s in plan(TABLE1)] == [
        "data",
        "proposals",
        "stage1",
        "stage2",
        "fcn8s",
        "eval",
        "stage1_trainval",
        "stage2_trainval",
        "fcn8s_trainval",
        "test",
    ]
    with pytest.raises(UserError, match="lacks"):
        plan(REPO / "configs")


@pytest.mark.slow
def test_table1_recipe_runs_every_step_on_the_synthetic_set(
    synthetic_voc, offline_wandb, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)  # the recipes write outputs/<name> relative to the working folder
    tiny = [
        f"data.root={synthetic_voc}",
        "data.train_split=train",
        "data.val_split=val",
        f"data.proposals.cache_dir={tmp_path}/proposals",
        "data.proposals.min_size=16",
        "data.proposals.workers=1",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.max_image_size=96",
        "model.width=0.0625",
        "model.pretrained=none",
        "model.input_size=64",
        "data.window_size=72",
        "data.crop_size=64",
        "schedule.max_steps=2",
        "schedule.val_every_n_steps=2",
        "schedule.precise_bn_batches=1",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.limit_val_batches=1",
        "crf.workers=1",
        "logger.mode=disabled",
        "logger.log_images=0",
    ]
    assert main(["pipeline", str(TABLE1), *tiny]) == 0
    outputs = tmp_path / "outputs"
    for name in ("table1-stage1", "table1-stage2", "table1-fcn8s"):
        assert (outputs / name / "checkpoints" / "final.ckpt").is_file()
    rows = read_results_csv(outputs / "table1-eval" / "results.csv")
    assert list(rows) == list(METHODS)
    capsys.readouterr()
    assert main(["pipeline", str(TABLE1), *tiny, "--steps", "stage1,stage2,fcn8s,eval,test"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("complete, skipped") == 5


def test_test_server_networks_train_on_trainval_aug_and_feed_the_test_run(tmp_path):
    from deconvnet.config import load_config

    steps = {s.name: s for s in plan(TABLE1)}
    for name in ("stage1", "stage2", "fcn8s"):
        val_cfg = load_config(steps[name].config)
        server_cfg = load_config(steps[f"{name}_trainval"].config)
        assert val_cfg.data.train_split == "train_aug" and server_cfg.data.train_split == "trainval_aug"
        assert server_cfg.output_dir != val_cfg.output_dir
    stage2 = load_config(steps["stage2_trainval"].config)
    assert stage2.model.init_from == f"{load_config(steps['stage1_trainval'].config).output_dir}/checkpoints/final.ckpt"
    test = load_config(steps["test"].config)
    assert test.eval.deconvnet_checkpoint == f"{stage2.output_dir}/checkpoints/final.ckpt"
    assert (
        test.eval.fcn_checkpoint == f"{load_config(steps['fcn8s_trainval'].config).output_dir}/checkpoints/final.ckpt"
    )
    evaluation = load_config(steps["eval"].config)
    assert (
        evaluation.eval.deconvnet_checkpoint
        == f"{load_config(steps['stage2'].config).output_dir}/checkpoints/final.ckpt"
    )
    # without the test split there is nothing to submit: the server networks are not trained
    root = tmp_path / "data"
    lists = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    cfg = load_config(steps["stage1_trainval"].config, [f"data.root={root}", f"output_dir={tmp_path}/out"])
    assert steps["stage1_trainval"].done(cfg)
    (lists / "test.txt").write_text("2008_000001\n")
    assert not steps["stage1_trainval"].done(cfg)


def test_each_training_step_hands_its_checkpoint_to_the_next():
    """Stage 2 starts from the checkpoint stage 1 writes and the evaluation reads stage 2's
    and FCN-8s', wherever their output_dir is: not from paths typed again in the recipes."""
    from deconvnet.config import load_config
    from deconvnet.pipeline import wiring

    steps = plan(TABLE1)
    wired = wiring(steps, ["output_dir=elsewhere/${name}"])
    cfg = {s.name: load_config(s.config, wired[s.name] + ["output_dir=elsewhere/${name}"]) for s in steps}
    assert cfg["stage2"].model.init_from == "elsewhere/table1-stage1/checkpoints/final.ckpt"
    assert cfg["eval"].eval.deconvnet_checkpoint == "elsewhere/table1-stage2/checkpoints/final.ckpt"
    assert cfg["eval"].eval.fcn_checkpoint == "elsewhere/table1-fcn8s/checkpoints/final.ckpt"
    # the server networks (trainval_aug) feed the test run in the same way
    assert cfg["stage2_trainval"].model.init_from == f"elsewhere/{cfg['stage1_trainval'].name}/checkpoints/final.ckpt"
    assert cfg["test"].eval.deconvnet_checkpoint == f"elsewhere/{cfg['stage2_trainval'].name}/checkpoints/final.ckpt"
    assert cfg["test"].eval.fcn_checkpoint == f"elsewhere/{cfg['fcn8s_trainval'].name}/checkpoints/final.ckpt"
