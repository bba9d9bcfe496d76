"""FCN-8s (voc-fcn8s at once): parameter count, crops, bilinear upsampling, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deconvnet.models import FCN8s, bilinear_kernel

TINY_WIDTH = 1 / 8


def voc_fcn8s_parameter_count(classes: int = 21) -> int:
    """Counted from the voc-fcn8s layer list: VGG16 convs, fc6/fc7 convs, 3 score layers,
    3 bias-free deconvolutions (4x4, 4x4, 16x16, classes -> classes)."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    total = sum(i * o * 9 + o for i, o in vgg)  # 14,714,688
    total += 512 * 4096 * 7 * 7 + 4096  # fc6
    total += 4096 * 4096 + 4096  # fc7
    total += (4096 + 512 + 256) * classes + 3 * classes  # score_fr, score_pool4, score_pool3
    total += classes * classes * (4 * 4 + 4 * 4 + 16 * 16)  # upscore2, upscore_pool4, upscore8
    return total


def test_paper_network_parameter_count():
    with torch.device("meta"):
        net = FCN8s()
    total = sum(p.numel() for p in net.parameters())
    assert voc_fcn8s_parameter_count() == 134_489_759
    assert total == 134_489_759
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    assert frozen == 21 * 21 * (16 + 16 + 256)  # only the bilinear upsamplers are frozen


def test_reference_layer_settings():
    with torch.device("meta"):
        net = FCN8s()
    assert net.encoder[0].conv1_1.padding == (100, 100)
    assert net.encoder[0].conv1_2.padding == (1, 1)
    assert net.fc6.fc6.kernel_size == (7, 7) and net.fc6.fc6.padding == (0, 0)
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert net.pool.ceil_mode
    for name, stride, kernel in (("upscore2", 2, 4), ("upscore_pool4", 2, 4), ("upscore8", 8, 16)):
        layer = getattr(net, name)
        assert layer.stride == (stride, stride) and layer.kernel_size == (kernel, kernel)
        assert layer.bias is None and not layer.weight.requires_grad


def test_bilinear_kernel_matches_the_caffe_formula():
    # FCN's upsample_filt: factor = (k + 1) // 2, centre = factor - 0.5 for even k
    four = torch.tensor([0.25, 0.75, 0.75, 0.25])
    weight = bilinear_kernel(3, 4)
    assert weight.shape == (3, 3, 4, 4)
    for c in range(3):
        assert torch.allclose(weight[c, c], four[:, None] * four[None, :])
    off_diagonal = weight.clone()
    off_diagonal[range(3), range(3)] = 0
    assert torch.all(off_diagonal == 0)  # each class is upsampled on its own
    sixteen = bilinear_kernel(1, 16)[0, 0]
    assert torch.allclose(sixteen[7, :4], torch.tensor([0.0625, 0.1875, 0.3125, 0.4375]) * 0.9375)
    assert sixteen.max() == 0.9375**2 and sixteen[0, 0] == 0.0625**2
    odd = bilinear_kernel(1, 3)[0, 0]  # factor 2, centre 1: [0.5, 1, 0.5]
    assert torch.allclose(odd, torch.tensor([0.5, 1.0, 0.5])[:, None] * torch.tensor([0.5, 1.0, 0.5]))


def test_upsampling_interpolates_a_constant_map_exactly():
    net = FCN8s(num_classes=2, width=1 / 16)
    up = net.upscore8(torch.full((1, 2, 6, 6), 3.0))
    assert torch.allclose(up[..., 8:-8, 8:-8], torch.full_like(up[..., 8:-8, 8:-8], 3.0))


@pytest.mark.parametrize("size", [(37, 53), (101, 67), (48, 48), (1, 1)])
def test_any_input_size_gives_the_same_output_size(size):
    net = FCN8s(num_classes=5, width=1 / 16).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)


def test_zero_initialised_scores_give_zero_logits():
    net = FCN8s(width=1 / 16).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 40, 40) * 50)
    assert torch.count_nonzero(out) == 0


def test_skip_scaling_and_crop_offsets():
    """Compute the fused scores by hand from the network's own pieces."""
    torch.manual_seed(0)
    net = FCN8s(num_classes=3, width=1 / 16).eval()
    for score in (net.score_fr, net.score_pool4, net.score_pool3):
        nn.init.normal_(score.weight)
    x = torch.randn(1, 3, 45, 39)
    pooled = []
    h = x
    with torch.no_grad():
        for stage in net.encoder:
            h = net.pool(stage(h))
            pooled.append(h)
        up2 = net.upscore2(net.score_fr(net.fc7(net.fc6(h))))
        s4 = net.score_pool4(pooled[3] * 0.01)[:, :, 5 : 5 + up2.shape[2], 5 : 5 + up2.shape[3]]
        up4 = net.upscore_pool4(up2 + s4)
        s3 = net.score_pool3(pooled[2] * 0.0001)[:, :, 9 : 9 + up4.shape[2], 9 : 9 + up4.shape[3]]
        expected = net.upscore8(up4 + s3)[:, :, 31 : 31 + 45, 31 : 31 + 39]
        assert torch.allclose(net(x), expected)


def class_prior_loss(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> float:
    """The lowest cross-entropy a network that ignores its input can reach on ``labels``:
    predicting the class frequencies everywhere (their entropy). Trained biases get no lower."""
    valid = labels[labels != ignore_index]
    freq = torch.bincount(valid, minlength=num_classes).double() / valid.numel()
    freq = freq[freq > 0]
    return float(-(freq * freq.log()).sum())


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = FCN8s(num_classes=3, width=TINY_WIDTH)
    labels = torch.zeros(1, 64, 64, dtype=torch.long)  # FCN-8s trains on one image per batch
    labels[0, :, :32] = 1
    labels[0, 32:, 32:] = 2
    x = torch.randn(1, 3, 64, 64) * 0.2
    x += 2 * F.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # each class shows in its channel

    def eval_loss() -> float:  # without dropout, so that the comparison is deterministic
        net.eval()
        with torch.no_grad():
            loss = F.cross_entropy(net(x), labels).item()
        net.train()
        return loss

    before = eval_loss()
    assert before == pytest.approx(torch.log(torch.tensor(3.0)).item())  # zero scores: uniform
    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=2e-3)  # SGD needs hundreds of steps from scratch
    frozen_before = net.upscore8.weight.clone()
    for _ in range(16):
        optimiser.zero_grad()
        F.cross_entropy(net(x), labels).backward()
        optimiser.step()
    # well below what the score biases alone could reach (the class prior, 0.92 x before):
    # the network has learnt where the classes are (measured: 0.26 x the prior)
    assert eval_loss() < 0.6 * class_prior_loss(labels, 3)
    assert torch.equal(net.upscore8.weight, frozen_before)  # bilinear upsampling stays fixed


def test_demo_options_add_batchnorm_and_unscaled_skips_only_when_asked():
    plain = FCN8s(num_classes=3, width=TINY_WIDTH)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert (plain.pool4_scale, plain.pool3_scale) == (0.01, 0.0001)
    bn = FCN8s(num_classes=3, width=TINY_WIDTH, batch_norm=True, skip_scaling=False)
    norms = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 13  # one after each VGG conv
    assert (bn.pool4_scale, bn.pool3_scale) == (1.0, 1.0)
    x = torch.randn(2, 3, 37, 53)
    assert bn(x).shape == (2, 3, 37, 53)
