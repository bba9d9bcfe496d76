"""End to end: every training recipe trains a few steps on the synthetic set (tiny networks),
stage 2 starts from stage 1, precise BN and the final checkpoint, non-finite loss handling."""

from pathlib import Path

import pytest
import torch

from deconvnet.cli import main
from deconvnet.config import load_config
from deconvnet.models import DeconvNet, FCN8s
from deconvnet.training.callbacks import NonFiniteLossError
from deconvnet.training.checkpoints import load_network, read_checkpoint
from deconvnet.training.run import train

from .conftest import EXPERIMENTS, AtStep, Capture

pytestmark = pytest.mark.slow


def _bn_stats(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


@pytest.mark.parametrize("suite", ["table1", "demo"])
def test_recipes_train_stage1_stage2_and_fcn8s(suite, tiny, tmp_path):
    recipes = EXPERIMENTS / suite
    # stage 1 through the command line, as a user runs it
    assert main(["train", str(recipes / "stage1.yaml"), *tiny("s1")]) == 0
    out1 = tmp_path / "s1"
    final1, last1 = out1 / "checkpoints/final.ckpt", out1 / "checkpoints/last.ckpt"
    config_text = (out1 / "config.yaml").read_text()
    assert config_text.startswith("# git revision: ") and "name: s1" in config_text
    final, last = read_checkpoint(final1), read_checkpoint(last1)
    assert final["global_step"] == last["global_step"] == 2
    assert "optimizer_states" in last and "optimizer_states" not in final  # final: weights only
    # precise BN ran between the two: same weights, re-estimated statistics
    weights = {k: v for k, v in final["state_dict"].items() if k not in _bn_stats(final["state_dict"])}
    assert all(torch.equal(v, last["state_dict"][k]) for k, v in weights.items() if "num_batches" not in k)
    changed = [k for k, v in _bn_stats(final["state_dict"]).items()
               if not torch.allclose(v, last["state_dict"][k])]
    assert len(changed) == len(_bn_stats(final["state_dict"]))
    net = load_network(final1, expect="deconvnet")
    assert isinstance(net, DeconvNet)
    assert net(torch.rand(2, 3, 64, 64) * 255).shape == (2, 21, 64, 64)

    # stage 2 starts from the stage-1 network (weights only: a fresh optimiser, step 0)
    capture2 = Capture()
    cfg2 = load_config(recipes / "stage2.yaml", tiny("s2", model__init_from=final1))
    train(cfg2, callbacks=[capture2])
    assert capture2.start["step"] == 0 and capture2.end["step"] == 2
    stage1_net = {k[len("net."):]: v for k, v in final["state_dict"].items()}
    assert all(torch.equal(capture2.start["net"][k], v) for k, v in stage1_net.items())
    assert capture2.start["optimizer"]["state"] == {}
    assert not torch.equal(capture2.end["net"]["classifier.weight"], stage1_net["classifier.weight"])

    # FCN-8s on whole images
    capture3 = Capture()
    cfg3 = load_config(recipes / "fcn8s.yaml", tiny("fcn", window=False))
    final3 = train(cfg3, callbacks=[capture3])
    assert isinstance(load_network(final3, expect={"name": "fcn8s", "num_classes": 21}), FCN8s)
    groups = capture3.start["optimizer"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(cfg3.optim.lr)
    if suite == "table1":  # the reference solver: SGD momentum 0.99, summed loss, lr 1e-10
        assert groups[0]["momentum"] == 0.99 and groups[1]["lr"] == pytest.approx(2e-10)
    else:
        assert "betas" in groups[0]  # Adam


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    def poison(trainer, pl_module):
        with torch.no_grad():
            pl_module.net.classifier.weight.fill_(float("nan"))

    cfg = load_config(EXPERIMENTS / "demo/stage1.yaml", tiny("nan", schedule__max_steps=4))
    with pytest.raises(NonFiniteLossError, match=r"non-finite \(nan\) at optimiser step 3.*last\.ckpt"):
        train(cfg, callbacks=[AtStep(3, poison)])
    checkpoint_dir = tmp_path / "nan/checkpoints"
    assert not (checkpoint_dir / "final.ckpt").exists()
    assert read_checkpoint(checkpoint_dir / "last.ckpt")["global_step"] == 2
    net = load_network(checkpoint_dir / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_cli_resume_of_a_finished_run_does_nothing(tiny, tmp_path):
    recipe = str(EXPERIMENTS / "demo/fcn8s.yaml")
    overrides = tiny("done", window=False, schedule__max_steps=1, schedule__val_every_n_steps=1)
    assert main(["train", recipe, *overrides]) == 0
    final = Path(tmp_path / "done/checkpoints/final.ckpt")
    stamp = final.stat().st_mtime_ns
    assert main(["train", recipe, *overrides]) == 0  # resume=auto: already at max_steps
    assert final.stat().st_mtime_ns == stamp
