"""DeconvNet: Table 2 layer plan, parameter count, unpooling, input checks, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deconvnet.models import DeconvNet

TINY = {"width": 1 / 8, "input_size": 64}


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def paper_parameter_count() -> int:
    """Table 2 counted by hand: conv (w + b) + BN (gamma + beta) for every layer."""
    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    def bn(c: int) -> int:
        return 2 * c

    encoder = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    decoder = [(512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 256),
               (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64), (64, 64)]
    total = sum(conv(i, o, 3) + bn(o) for i, o in encoder + decoder)
    total += conv(512, 4096, 7) + bn(4096)  # fc6
    total += conv(4096, 4096, 1) + bn(4096)  # fc7
    total += conv(4096, 512, 7) + bn(512)  # deconv-fc6
    total += conv(64, 21, 1)  # classifier
    return total


def test_paper_network_has_the_paper_parameter_count():
    with torch.device("meta"):
        net = DeconvNet()
    assert paper_parameter_count() == 251_805_653
    assert count(net) == 251_805_653


def test_layer_plan_matches_table2():
    with torch.device("meta"):
        net = DeconvNet()
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert net.fc6.fc6.kernel_size == (7, 7) and net.fc6.fc6.padding == (0, 0)
    assert net.fc7.fc7.kernel_size == (1, 1) and net.fc7.fc7.out_channels == 4096
    assert isinstance(net.deconv_fc6.deconv_fc6, nn.ConvTranspose2d)
    assert net.deconv_fc6.deconv_fc6.kernel_size == (7, 7)
    deconvs = [[m.out_channels for m in stage if isinstance(m, nn.ConvTranspose2d)] for stage in net.decoder]
    assert deconvs == [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64, 64]]
    assert all(
        m.kernel_size == (3, 3) and m.padding == (1, 1)
        for stage in net.decoder for m in stage if isinstance(m, nn.ConvTranspose2d)
    )
    # BN + ReLU after every conv/deconv except the classifier; no dropout
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    n_conv = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules())
    assert n_bn == n_conv - 1 == 13 + 2 + 1 + 13
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    assert net.classifier.out_channels == 21 and net.classifier.kernel_size == (1, 1)


@pytest.mark.parametrize("width,size", [(1 / 16, 64), (1 / 16, 96), (1 / 8, 64)])
def test_output_shape_follows_input_size_and_classes(width, size):
    net = DeconvNet(num_classes=5, input_size=size, width=width).eval()
    assert net.fc6.fc6.kernel_size == (size // 32, size // 32)
    assert net.fc6.fc6.out_channels == round(4096 * width)
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, 5, size, size)


def test_width_keeps_at_least_one_channel():
    net = DeconvNet(num_classes=3, input_size=32, width=1 / 1000)
    assert net.encoder[0].conv1_1.out_channels == 1
    assert net.fc6.fc6.out_channels == 4
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    net = DeconvNet(**TINY)
    deconv = net.decoder[0].deconv5_1.weight
    assert abs(deconv.std().item() - 0.01) < 0.002
    assert torch.all(net.decoder[0].deconv5_1.bias == 0)
    assert abs(net.classifier.weight.std().item() - 0.01) < 0.003
    assert torch.all(net.classifier.bias == 0)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1)
        assert torch.allclose(bn.bias, torch.full_like(bn.bias, 0.001))
    conv = net.encoder[1].conv2_1  # Kaiming fan-out: std = sqrt(2 / (out * 9))
    expected = (2 / (conv.out_channels * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.2


def test_classifier_init_std_is_an_option_and_only_touches_the_classifier():
    torch.manual_seed(0)
    net = DeconvNet(**TINY, classifier_std=0.3)
    assert abs(net.classifier.weight.std().item() - 0.3) < 0.08
    assert abs(net.decoder[0].deconv5_1.weight.std().item() - 0.01) < 0.002


def test_wrong_input_size_names_the_built_size():
    net = DeconvNet(**TINY)
    with pytest.raises(ValueError, match=r"built for 64x64 inputs got 3x96x96.*input_size=96"):
        net(torch.randn(2, 3, 96, 96))
    with pytest.raises(ValueError, match=r"built for 64x64 inputs got 3x64x50"):
        net(torch.randn(2, 3, 64, 50))
    with pytest.raises(ValueError, match=r"got 1x64x64"):
        net(torch.randn(2, 1, 64, 64))


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32.*got 200"):
        DeconvNet(input_size=200)


def test_single_window_training_batch_is_refused_clearly():
    net = DeconvNet(**TINY)
    with pytest.raises(ValueError, match="at least 2 windows"):
        net(torch.randn(1, 3, 64, 64))
    assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 21, 64, 64)


def test_unpooling_puts_values_back_at_their_switches():
    net = DeconvNet(**TINY)
    x = torch.tensor([[[[1.0, 9.0, 3.0, 2.0],
                        [4.0, 0.0, 5.0, 8.0],
                        [7.0, 6.0, 0.0, 1.0],
                        [2.0, 3.0, 4.0, 0.5]]]])
    pooled, switches = net.pool(x)
    assert pooled.flatten().tolist() == [9.0, 8.0, 7.0, 4.0]
    assert switches.flatten().tolist() == [1, 7, 8, 14]  # flat positions of the maxima
    values = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    out = net.unpool(values, switches)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 0, 1] = 10.0
    expected[0, 0, 1, 3] = 20.0
    expected[0, 0, 2, 0] = 30.0
    expected[0, 0, 3, 2] = 40.0
    assert torch.equal(out, expected)


def test_decoder_uses_the_switches_of_the_matching_pool():
    """Each unpooling gets the switches of the pool at its own resolution, deepest first."""
    torch.manual_seed(0)
    net = DeconvNet(**TINY).eval()
    recorded = []
    original = net.unpool.forward
    net.unpool.forward = lambda x, indices, output_size=None: (
        recorded.append((x.shape[-1], indices.shape[-1])) or original(x, indices, output_size)
    )
    net(torch.randn(1, 3, 64, 64))
    assert recorded == [(2, 2), (4, 4), (8, 8), (16, 16), (32, 32)]


def _copy(net: DeconvNet) -> DeconvNet:
    twin = DeconvNet(num_classes=net.num_classes, input_size=net.input_size, width=net.width)
    twin.load_state_dict(net.state_dict())
    return twin


def test_channels_last_gives_the_same_forward_and_backward():
    torch.manual_seed(0)
    net = DeconvNet(**TINY).double()
    twin = _copy(net).double().to(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    out = net(x)
    out_cl = twin(x.contiguous(memory_format=torch.channels_last))
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, out_cl, atol=1e-10)
    target = torch.randn_like(out)
    (out * target).sum().backward()
    (out_cl * target).sum().backward()
    for (name, p), p_cl in zip(net.named_parameters(), twin.parameters()):
        if name.endswith(".bias") and not name.startswith("classifier"):
            continue  # a bias right before BN has a zero gradient (rounding noise only)
        assert (p.grad - p_cl.grad).abs().max() <= 1e-8 * p.grad.abs().max(), name


def test_bfloat16_autocast_forward_backward():
    torch.manual_seed(0)
    net = DeconvNet(**TINY).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 21, (4, 64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x)
        loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    assert logits.dtype == torch.bfloat16 and logits.shape == (4, 21, 64, 64)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.encoder[0].conv1_1.weight.grad.abs().sum() > 0  # gradients reach the input layer
    # With fixed BN statistics bf16 agrees with fp32 to bf16 precision. (In training mode the
    # batch statistics of the 1x1 fc6/fc7 maps over a few windows amplify rounding errors.)
    net.eval()
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x).float()
    assert (low - reference).abs().max() < 0.03 * reference.abs().max()


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = DeconvNet(num_classes=4, input_size=64, width=1 / 8)
    labels = torch.zeros(4, 64, 64, dtype=torch.long)
    labels[:, 16:48, 16:48] = torch.tensor([1, 2, 3, 1]).view(4, 1, 1)
    labels[:, :2] = 255  # void rows are ignored
    x = torch.randn(4, 3, 64, 64) * 0.5
    x += 2 * F.one_hot(labels.clamp(max=3), 4)[..., 1:].permute(0, 3, 1, 2).float()  # class c in channel c-1
    optimiser = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(16):
        optimiser.zero_grad()
        F.cross_entropy(net(x), labels, ignore_index=255).backward()
        optimiser.step()
    with torch.no_grad():
        after = F.cross_entropy(net(x), labels, ignore_index=255).item()
    # the classifier bias alone reaches the class prior at best; the network must do clearly
    # better, so it has learnt which pixels belong to which class (measured: 0.65 x the prior)
    valid = labels[labels != 255]
    freq = torch.bincount(valid, minlength=4).double() / valid.numel()
    prior = float(-(freq[freq > 0] * freq[freq > 0].log()).sum())
    assert after < 0.8 * prior, (after, prior)
