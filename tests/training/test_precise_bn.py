"""Precise BN: running statistics become the plain average of the batch statistics."""

import torch
import torch.nn.functional as F
from torch import nn

from deconvnet.training.callbacks import recompute_batchnorm_statistics


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5))
    with torch.no_grad():  # non-trivial affine parameters, so the second BN's input depends on them
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
            bn.running_mean.fill_(7.0)  # stale statistics that must disappear
            bn.running_var.fill_(9.0)
    return net


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 9, 9, generator=g) * (i + 1) + i for i in range(n)]


def _expected(net: nn.Sequential, batches: list[torch.Tensor]):
    """Mean over batches of each BN input's batch mean and unbiased batch variance, with
    every BN normalising by its batch statistics (train mode)."""
    means = {1: [], 4: []}
    variances = {1: [], 4: []}
    with torch.no_grad():
        for x in batches:
            h = net[0](x)
            means[1].append(h.mean((0, 2, 3)))
            variances[1].append(h.var((0, 2, 3), unbiased=True))
            h = F.batch_norm(h, None, None, net[1].weight, net[1].bias, training=True, eps=net[1].eps)
            h = net[3](F.relu(h))
            means[4].append(h.mean((0, 2, 3)))
            variances[4].append(h.var((0, 2, 3), unbiased=True))
    return {i: (torch.stack(means[i]).mean(0), torch.stack(variances[i]).mean(0)) for i in (1, 4)}


def test_running_stats_are_the_average_of_batch_statistics():
    net = _net()
    batches = _batches(5)
    expected = _expected(net, batches)
    net.eval()
    used = recompute_batchnorm_statistics(net, net, batches, num_batches=5)
    assert used == 5
    for i in (1, 4):
        mean, var = expected[i]
        assert torch.allclose(net[i].running_mean, mean, atol=1e-5)
        assert torch.allclose(net[i].running_var, var, atol=1e-4)
        assert net[i].momentum == 0.1  # the training momentum is restored
    assert not net.training  # and the mode


def test_short_loaders_are_cycled_and_weights_untouched():
    net = _net()
    batches = _batches(2)
    weights = [p.clone() for p in net.parameters()]
    used = recompute_batchnorm_statistics(net, net, batches, num_batches=4)
    assert used == 4
    # cycling twice through the same 2 batches gives the same average as once
    once = _net()
    recompute_batchnorm_statistics(once, once, batches, num_batches=2)
    assert torch.allclose(net[1].running_mean, once[1].running_mean, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    assert all(p.grad is None for p in net.parameters())


def test_no_batchnorm_no_work():
    net = nn.Conv2d(3, 3, 1)
    calls = []
    assert recompute_batchnorm_statistics(net, calls.append, _batches(2), num_batches=2) == 0
    assert calls == []
