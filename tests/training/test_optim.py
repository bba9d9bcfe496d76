"""Parameter groups (Caffe's lr_mult / decay_mult) and the schedules in optimiser steps."""

import pytest
import torch
from omegaconf import OmegaConf

from deconvnet.config import load_config
from deconvnet.models import FCN8s
from deconvnet.models.deconvnet import DeconvNet
from deconvnet.training.optim import (
    build_optimizer,
    build_plateau_scheduler,
    build_step_scheduler,
    parameter_groups,
)


def _groups_by_name(net, optim_cfg):
    return {g["name"]: g for g in parameter_groups(net, optim_cfg)}


def test_biases_get_twice_the_lr_and_no_decay_bn_is_decayed_like_weights():
    cfg = load_config()  # the paper's solver
    net = DeconvNet(num_classes=21, input_size=64, width=0.0625)
    groups = _groups_by_name(net, cfg.optim)
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}

    assert groups["weights"]["lr"] == 0.01 and groups["weights"]["weight_decay"] == 0.0005
    assert groups["biases"]["lr"] == pytest.approx(0.02) and groups["biases"]["weight_decay"] == 0.0
    # Caffe's default decay_mult 1: the official BN layers declare no param block
    assert groups["norm"]["lr"] == 0.01 and groups["norm"]["weight_decay"] == 0.0005
    # every trainable parameter in exactly one group, and in the right one
    assert sum(len(s) for s in ids.values()) == len({id(p) for p in net.parameters()})
    assert id(net.classifier.bias) in ids["biases"] and id(net.classifier.weight) in ids["weights"]
    bn = net.fc6.bnfc6
    assert {id(bn.weight), id(bn.bias)} <= ids["norm"]
    deconv = net.decoder[0].deconv5_1
    assert id(deconv.bias) in ids["biases"] and id(deconv.weight) in ids["weights"]


@pytest.mark.parametrize(("override", "expected"), [("optim.bn_weight_decay=0", 0.0),
                                                   ("optim.bn_weight_decay=0.002", 0.002),
                                                   ("optim.weight_decay=0.003", 0.003)])
def test_bn_weight_decay_option(override, expected):
    cfg = load_config(None, [override])
    groups = _groups_by_name(DeconvNet(num_classes=21, input_size=64, width=0.0625), cfg.optim)
    assert groups["norm"]["weight_decay"] == pytest.approx(expected)
    assert groups["weights"]["weight_decay"] == pytest.approx(cfg.optim.weight_decay)
    # the decay reaches the optimiser: one SGD step moves a BN scale with zero gradient
    net = DeconvNet(num_classes=21, input_size=64, width=0.0625)
    optimizer = build_optimizer(net, cfg.optim)
    bn = net.fc6.bnfc6
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    before = bn.weight.detach().clone()
    optimizer.step()
    lr = cfg.optim.lr
    torch.testing.assert_close(bn.weight.detach(), before * (1 - lr * expected))


def test_frozen_upsamplers_are_left_out():
    cfg = load_config()
    net = FCN8s(num_classes=21, width=0.0625)
    frozen = {id(p) for p in net.parameters() if not p.requires_grad}
    assert frozen, "FCN-8s keeps its bilinear upsamplers frozen"
    grouped = {id(p) for g in parameter_groups(net, cfg.optim) for p in g["params"]}
    assert grouped.isdisjoint(frozen)
    assert grouped == {id(p) for p in net.parameters() if p.requires_grad}


def test_sgd_and_adam_carry_the_groups():
    cfg = load_config(None, ["optim.momentum=0.99"])
    net = torch.nn.Conv2d(3, 4, 3)
    sgd = build_optimizer(net, cfg.optim)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.99
    assert [g["lr"] for g in sgd.param_groups] == [0.01, pytest.approx(0.02)]
    adam = build_optimizer(net, load_config(None, ["optim.name=adam", "optim.lr=0.001"]).optim)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.001


def _lrs_at(steps, schedule_overrides):
    """Learning rates (weights, biases) used by the update numbered s (0-based) for s in steps."""
    cfg = load_config(None, schedule_overrides)
    net = torch.nn.Conv2d(1, 1, 1)
    opt = build_optimizer(net, cfg.optim)
    sched = build_step_scheduler(opt, cfg.schedule)
    seen, step = {}, 0
    while step <= max(steps):
        if step in steps:
            seen[step] = tuple(g["lr"] for g in opt.param_groups)
        opt.step()
        if sched is not None:
            sched.step()
        step += 1
    return seen


def test_step_schedule_changes_exactly_at_the_boundaries():
    stage1 = _lrs_at({0, 8999, 9000, 17999, 18000}, ["schedule.step_size=9000"])
    assert stage1[0] == pytest.approx((0.01, 0.02))
    assert stage1[8999] == pytest.approx((0.01, 0.02))
    assert stage1[9000] == pytest.approx((0.001, 0.002))
    assert stage1[17999] == pytest.approx((0.001, 0.002))
    assert stage1[18000] == pytest.approx((0.0001, 0.0002))
    stage2 = _lrs_at({9999, 10000}, ["schedule.step_size=10000"])
    assert stage2[9999][0] == pytest.approx(0.01) and stage2[10000][0] == pytest.approx(0.001)


def test_constant_schedule_keeps_the_rate():
    lrs = _lrs_at({0, 5000}, ["schedule.policy=constant", "optim.lr=1e-10"])
    assert lrs[0] == lrs[5000] == pytest.approx((1e-10, 2e-10))


def test_plateau_divides_after_patience_validations_without_gain():
    cfg = load_config(None, ["schedule.policy=plateau", "schedule.plateau_patience=2"])
    opt = build_optimizer(torch.nn.Conv2d(1, 1, 1), cfg.optim)
    assert build_step_scheduler(opt, cfg.schedule) is None
    plateau = build_plateau_scheduler(opt, cfg.schedule)
    for accuracy in (0.5, 0.6, 0.6, 0.6):  # two validations without gain: still patient
        plateau.step(accuracy)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    plateau.step(0.59)  # the third: divide by 10, biases keep their 2x
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.002])


def test_unknown_policy_and_optimizer_are_refused():
    cfg = OmegaConf.merge(load_config(), {"schedule": {"policy": "cosine"}, "optim": {"name": "lion"}})
    with pytest.raises(ValueError, match="schedule.policy"):
        build_step_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), cfg.schedule)
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(torch.nn.Conv2d(1, 1, 1), cfg.optim)


def test_a_frozen_weight_leaves_its_trainable_bias_grouped():
    cfg = load_config()
    conv = torch.nn.Conv2d(1, 2, 1)
    conv.weight.requires_grad_(False)  # named first: the bias after it must still be seen
    groups = _groups_by_name(conv, cfg.optim)
    assert list(groups) == ["biases"] and groups["biases"]["params"] == [conv.bias]


def test_gamma_other_than_the_papers_reaches_both_schedules():
    cfg = load_config(None, ["schedule.step_size=2", "schedule.gamma=0.5"])
    lrs = _lrs_at({1, 2, 4}, ["schedule.step_size=2", "schedule.gamma=0.5"])
    assert [lrs[s][0] for s in (1, 2, 4)] == pytest.approx([0.01, 0.005, 0.0025])
    opt = build_optimizer(torch.nn.Conv2d(1, 1, 1), cfg.optim)
    plateau = build_plateau_scheduler(opt, OmegaConf.merge(cfg.schedule, {"plateau_patience": 0}))
    plateau.step(0.5)
    plateau.step(0.5)  # no gain, patience 0: lr x 0.5
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)


def test_unknown_names_list_the_valid_ones():
    cfg = OmegaConf.merge(load_config(), {"schedule": {"policy": "cosine"}, "optim": {"name": "Lion"}})
    with pytest.raises(ValueError) as policy:
        build_step_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), cfg.schedule)
    assert str(policy.value) == "schedule.policy='cosine' is unknown; valid: step, plateau, constant"
    with pytest.raises(ValueError) as optimizer:
        build_optimizer(torch.nn.Conv2d(1, 1, 1), cfg.optim)
    assert str(optimizer.value) == "optim.name='lion' is unknown; valid: sgd, adam"
