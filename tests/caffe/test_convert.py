"""deconvnet convert: tiny caffemodels laid out like the released ones reproduce, once
converted, a reference forward computed directly from their blobs with torch.nn.functional
(no model class of ours involved in the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deconvnet.caffe import convert_caffemodel, read_caffemodel
from deconvnet.errors import WeightsError

try:  # checkpoint reading may live in runtime/ (it is moving there)
    from deconvnet.runtime.checkpoints import load_network
except ImportError:
    from deconvnet.training.checkpoints import load_network

WIDTH = 0.0625  # 4, 8, 16, 32, 32 channels; fc 256
ENCODER = (
    (("1_1", 4), ("1_2", 4)),
    (("2_1", 8), ("2_2", 8)),
    (("3_1", 16), ("3_2", 16), ("3_3", 16)),
    (("4_1", 32), ("4_2", 32), ("4_3", 32)),
    (("5_1", 32), ("5_2", 32), ("5_3", 32)),
)
DECODER = (
    (("5_1", 32), ("5_2", 32), ("5_3", 32)),
    (("4_1", 32), ("4_2", 32), ("4_3", 16)),
    (("3_1", 16), ("3_2", 16), ("3_3", 8)),
    (("2_1", 8), ("2_2", 4)),
    (("1_1", 4), ("1_2", 4)),
)
FC = 256
CLASSES = 21


def _weight(rng, *shape):
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _bn(rng, channels):
    scale = rng.uniform(-1.5, 1.5, (1, channels, 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.5, 0.5, (1, channels, 1, 1)).astype(np.float32)
    return [scale, shift]


def deconvnet_blobs(seed: int = 0, input_size: int = 32) -> dict[str, list[np.ndarray]]:
    """name -> blobs in the release's layer order and Caffe layouts."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, list[np.ndarray]] = {}
    channels = 3
    for stage in ENCODER:
        for suffix, out in stage:
            blobs[f"conv{suffix}"] = [
                _weight(rng, out, channels, 3, 3),
                rng.uniform(-0.1, 0.1, (1, 1, 1, out)).astype(np.float32),
            ]
            blobs[f"bn{suffix}"] = _bn(rng, out)
            channels = out
    k = input_size // 32
    blobs["fc6"] = [_weight(rng, FC, channels, k, k), np.zeros((1, 1, 1, FC), np.float32) + 0.01]
    blobs["bnfc6"] = _bn(rng, FC)
    blobs["fc7"] = [_weight(rng, FC, FC, 1, 1), np.zeros((1, 1, 1, FC), np.float32)]
    blobs["bnfc7"] = _bn(rng, FC)
    blobs["fc6-deconv"] = [_weight(rng, FC, 32, k, k), np.full((1, 1, 1, 32), 0.02, np.float32)]  # in, out, k, k
    blobs["fc6-deconv-bn"] = _bn(rng, 32)
    channels = 32
    for stage in DECODER:
        for suffix, out in stage:
            blobs[f"deconv{suffix}"] = [
                _weight(rng, channels, out, 3, 3),
                rng.uniform(-0.1, 0.1, (1, 1, 1, out)).astype(np.float32),
            ]
            blobs[f"debn{suffix}"] = _bn(rng, out)
            channels = out
    blobs["seg-score-voc"] = [
        _weight(rng, CLASSES, channels, 1, 1),
        rng.uniform(-0.1, 0.1, (1, 1, 1, CLASSES)).astype(np.float32),
    ]
    return blobs


def write_deconvnet(writer, path, blobs, current: bool = False):
    kinds = {name: ("BN" if "bn" in name else "Deconvolution" if "deconv" in name else "Convolution") for name in blobs}
    layer = writer.current_layer if current else writer.v1_layer
    items = []
    for name, arrays in blobs.items():
        items.append(layer(name, kinds[name], arrays))
        if kinds[name] == "BN":
            items.append(layer(name.replace("bn", "relu"), "ReLU", []))
    return writer.write(path, items)


def reference_deconvnet(blobs: dict[str, list[np.ndarray]], x: torch.Tensor) -> torch.Tensor:
    """The release's forward (INFERENCE BN: y = scale * x + shift) straight from the blobs."""
    t = {name: [torch.from_numpy(a) for a in arrays] for name, arrays in blobs.items()}

    def bn_relu(h, name):
        scale, shift = t[name]
        return torch.relu(h * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))

    switches = []
    for stage in ENCODER:
        for suffix, _ in stage:
            w, b = t[f"conv{suffix}"]
            x = bn_relu(F.conv2d(x, w, b.reshape(-1), padding=1), f"bn{suffix}")
        x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        switches.append(idx)
    x = bn_relu(F.conv2d(x, t["fc6"][0], t["fc6"][1].reshape(-1)), "bnfc6")
    x = bn_relu(F.conv2d(x, t["fc7"][0], t["fc7"][1].reshape(-1)), "bnfc7")
    x = bn_relu(F.conv_transpose2d(x, t["fc6-deconv"][0], t["fc6-deconv"][1].reshape(-1)), "fc6-deconv-bn")
    for stage, idx in zip(DECODER, reversed(switches)):
        x = F.max_unpool2d(x, idx, 2, 2)
        for suffix, _ in stage:
            w, b = t[f"deconv{suffix}"]
            x = bn_relu(F.conv_transpose2d(x, w, b.reshape(-1), padding=1), f"debn{suffix}")
    w, b = t["seg-score-voc"]
    return F.conv2d(x, w, b.reshape(-1))


@pytest.mark.parametrize("current", [False, True], ids=["V1-layers", "current-layer"])
def test_converted_deconvnet_reproduces_the_blobs_forward(tmp_path, caffe_writer, current):
    blobs = deconvnet_blobs()
    source = write_deconvnet(caffe_writer, tmp_path / "DeconvNet_tiny.caffemodel", blobs, current)
    out = convert_caffemodel(source, "deconvnet", tmp_path / "deconvnet.ckpt")

    net = load_network(out, expect={"name": "deconvnet", "num_classes": 21})
    assert net.model_config["weights_style"] == "caffe"
    assert net.model_config["width"] == WIDTH and net.model_config["input_size"] == 32
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 50
    with torch.no_grad():
        got, expected = net(x), reference_deconvnet(blobs, x)
    assert expected.abs().mean() > 0.01  # the reference is not trivially zero
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_inference_bn_is_exactly_scale_times_x_plus_shift(tmp_path, caffe_writer):
    blobs = deconvnet_blobs()
    out = convert_caffemodel(
        write_deconvnet(caffe_writer, tmp_path / "m.caffemodel", blobs), "deconvnet", tmp_path / "m.ckpt"
    )
    bn = load_network(out).encoder[0].bn1_1
    scale, shift = (torch.from_numpy(a).view(1, -1, 1, 1) for a in blobs["bn1_1"])
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(2)) * 30
    with torch.no_grad():  # one float32 rounding at most (mean 0 / var 1 would be 5e-6 off)
        torch.testing.assert_close(bn(x), x * scale + shift, rtol=1e-6, atol=1e-6)


def test_learn_mode_bn_keeps_gamma_beta_and_neutral_statistics(tmp_path, caffe_writer):
    blobs = deconvnet_blobs()
    out = convert_caffemodel(
        write_deconvnet(caffe_writer, tmp_path / "m.caffemodel", blobs), "deconvnet", tmp_path / "m.ckpt", bn="learn"
    )
    checkpoint = torch.load(out, weights_only=True)
    state = checkpoint["state_dict"]
    assert checkpoint["converted_from"]["bn"] == "learn"
    torch.testing.assert_close(state["net.decoder.0.debn5_1.weight"], torch.from_numpy(blobs["debn5_1"][0]).reshape(-1))
    assert torch.equal(state["net.decoder.0.debn5_1.running_var"], torch.ones(32))


# ------------------------------------------------------------------------------- FCN-8s

FCN_CONVS = [f"conv{s}" for stage in ENCODER for s, _ in stage]


def fcn_blobs(seed: int = 0, score_bias: bool = True) -> dict[str, list[np.ndarray]]:
    """The staged fcn-8s-pascal layout: dashed names, fc6/fc7 as InnerProduct-shaped blobs,
    a biased score2, a grouped (C x 1 x 16 x 16) final upsampling."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, list[np.ndarray]] = {}
    channels = 3
    for stage in ENCODER:
        for suffix, out in stage:
            blobs[f"conv{suffix}"] = [
                _weight(rng, out, channels, 3, 3),
                rng.uniform(-0.1, 0.1, (1, 1, 1, out)).astype(np.float32),
            ]
            channels = out
    blobs["fc6"] = [
        _weight(rng, FC, channels * 49).reshape(1, 1, FC, channels * 49),
        np.full((1, 1, 1, FC), 0.01, np.float32),
    ]
    blobs["fc7"] = [_weight(rng, FC, FC).reshape(1, 1, FC, FC), np.zeros((1, 1, 1, FC), np.float32)]
    blobs["score-fr"] = [_weight(rng, CLASSES, FC, 1, 1), rng.uniform(-0.5, 0.5, (1, 1, 1, CLASSES)).astype(np.float32)]
    blobs["score2"] = [_weight(rng, CLASSES, CLASSES, 4, 4)]
    if score_bias:
        blobs["score2"].append(rng.uniform(-1, 1, (1, 1, 1, CLASSES)).astype(np.float32))
    blobs["score-pool4"] = [
        _weight(rng, CLASSES, 32, 1, 1),
        rng.uniform(-0.5, 0.5, (1, 1, 1, CLASSES)).astype(np.float32),
    ]
    blobs["score4"] = [_weight(rng, CLASSES, CLASSES, 4, 4)]
    blobs["score-pool3"] = [
        _weight(rng, CLASSES, 16, 1, 1),
        rng.uniform(-0.5, 0.5, (1, 1, 1, CLASSES)).astype(np.float32),
    ]
    blobs["upsample"] = [_weight(rng, CLASSES, 1, 16, 16)]
    return blobs


def write_fcn(writer, path, blobs):
    kinds = {
        "fc6": "InnerProduct",
        "fc7": "InnerProduct",
        "score2": "Deconvolution",
        "score4": "Deconvolution",
        "upsample": "Deconvolution",
    }
    return writer.write(path, [writer.v1_layer(n, kinds.get(n, "Convolution"), a) for n, a in blobs.items()])


def reference_fcn(blobs, x):
    """The staged FCN-8s forward (no skip scaling) with Caffe's ceil-mode pooling and crops."""
    t = {name: [torch.from_numpy(a) for a in arrays] for name, arrays in blobs.items()}
    h = x
    pools = []
    for i, name in enumerate(FCN_CONVS):
        w, b = t[name]
        h = torch.relu(F.conv2d(h, w, b.reshape(-1), padding=100 if i == 0 else 1))
        if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"):
            h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            pools.append(h)
    w6 = t["fc6"][0].reshape(FC, -1, 7, 7)
    h = torch.relu(F.conv2d(h, w6, t["fc6"][1].reshape(-1)))
    h = torch.relu(F.conv2d(h, t["fc7"][0].reshape(FC, FC, 1, 1), t["fc7"][1].reshape(-1)))
    score = F.conv2d(h, t["score-fr"][0], t["score-fr"][1].reshape(-1))
    bias2 = t["score2"][1].reshape(-1) if len(t["score2"]) > 1 else None
    up2 = F.conv_transpose2d(score, t["score2"][0], bias2, stride=2)
    p4 = F.conv2d(pools[3], t["score-pool4"][0], t["score-pool4"][1].reshape(-1))
    fused = up2 + p4[:, :, 5 : 5 + up2.shape[2], 5 : 5 + up2.shape[3]]
    up4 = F.conv_transpose2d(fused, t["score4"][0], stride=2)
    p3 = F.conv2d(pools[2], t["score-pool3"][0], t["score-pool3"][1].reshape(-1))
    final = up4 + p3[:, :, 9 : 9 + up4.shape[2], 9 : 9 + up4.shape[3]]
    big = F.conv_transpose2d(final, t["upsample"][0], stride=8, groups=CLASSES)
    return big[:, :, 31 : 31 + x.shape[2], 31 : 31 + x.shape[3]]


def test_converted_staged_fcn8s_reproduces_the_blobs_forward(tmp_path, caffe_writer):
    blobs = fcn_blobs()
    out = convert_caffemodel(
        write_fcn(caffe_writer, tmp_path / "fcn-8s-pascal.caffemodel", blobs), "fcn8s", tmp_path / "fcn8s.ckpt"
    )
    net = load_network(out, expect="fcn8s")
    assert net.model_config["fcn_skip_scaling"] is False
    x = torch.randn(2, 3, 37, 45, generator=torch.Generator().manual_seed(3)) * 50
    with torch.no_grad():
        got, expected = net(x), reference_fcn(blobs, x)
    assert got.shape == (2, 21, 37, 45)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


# -------------------------------------------------------------------------------- VGG16


def test_vgg16_gives_a_torchvision_state_dict_our_loader_takes(tmp_path, caffe_writer):
    from deconvnet.models import FCN8s

    blobs = {name: arrays for name, arrays in fcn_blobs().items() if name.startswith(("conv", "fc"))}
    blobs["fc8"] = [np.ones((1, 1, 10, FC), np.float32), np.zeros((1, 1, 1, 10), np.float32)]
    source = write_fcn(caffe_writer, tmp_path / "VGG_ILSVRC_16_layers_conv.caffemodel", blobs)
    state = torch.load(convert_caffemodel(source, "vgg16", tmp_path / "vgg16.pth"), weights_only=True)
    assert state["features.28.weight"].shape == (32, 32, 3, 3)
    assert state["classifier.0.weight"].shape == (FC, 32 * 49)
    assert state["classifier.6.weight"].shape == (10, FC)

    net = FCN8s(width=WIDTH)
    net.load_vgg16(tmp_path / "vgg16.pth")
    pool5 = torch.randn(1, 32, 7, 7, generator=torch.Generator().manual_seed(4))
    w, b = (torch.from_numpy(a) for a in blobs["fc6"])
    expected = F.linear(pool5.reshape(1, -1), w.reshape(FC, -1), b.reshape(-1))  # Caffe's InnerProduct
    with torch.no_grad():
        torch.testing.assert_close(net.fc6.fc6(pool5).reshape(1, -1), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- errors


def test_every_unmatched_or_misshaped_blob_is_named_in_one_line(tmp_path, caffe_writer):
    blobs = deconvnet_blobs()
    del blobs["debn3_2"]
    blobs["deconv2_1"][0] = blobs["deconv2_1"][0][:, :5]  # 8 -> 5 outputs
    blobs["extra-score"] = [np.zeros((1, 1, 1, 3), np.float32)]
    source = write_deconvnet(caffe_writer, tmp_path / "m.caffemodel", blobs)
    with pytest.raises(WeightsError) as info:
        convert_caffemodel(source, "deconvnet", tmp_path / "m.ckpt")
    message = str(info.value)
    assert "\n" not in message
    for needle in ("'debn3_2'", "'deconv2_1' blob 0", "'extra-score'", str(source)):
        assert needle in message
    assert not (tmp_path / "m.ckpt").exists()


def test_a_model_of_another_network_is_refused(tmp_path, caffe_writer):
    source = write_fcn(caffe_writer, tmp_path / "fcn.caffemodel", fcn_blobs())
    with pytest.raises(WeightsError, match="fcn.caffemodel"):
        convert_caffemodel(source, "deconvnet", tmp_path / "x.ckpt")


def test_truncated_and_foreign_files_give_one_clear_line(tmp_path, caffe_writer):
    source = write_deconvnet(caffe_writer, tmp_path / "m.caffemodel", deconvnet_blobs())
    data = source.read_bytes()
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "notes.caffemodel"
    foreign.write_text("name: 'DeconvNet' layers { name: 'conv1_1' type: CONVOLUTION }\n" * 3)
    for bad in (truncated, foreign):
        with pytest.raises(WeightsError) as info:
            read_caffemodel(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_double_data_and_shape_blobs_are_read(tmp_path, caffe_writer):
    array = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    path = caffe_writer.write(
        tmp_path / "d.caffemodel",
        [
            caffe_writer.v1_layer("fc8", "InnerProduct", [array], legacy=False, double=True),
            caffe_writer.v1_layer("fc9", "InnerProduct", [array.astype(np.float32)], legacy=True),
        ],
    )
    layers = read_caffemodel(path).by_name()
    assert layers["fc8"].blobs[0].shape == (2, 3) and layers["fc8"].blobs[0].dtype == np.float32
    np.testing.assert_allclose(layers["fc8"].blobs[0], array, rtol=1e-6)
    assert layers["fc9"].blobs[0].shape == (1, 1, 2, 3)  # legacy 4-d dims kept
    assert read_caffemodel(path).format == "V1"


def test_cli_convert_reports_bad_files_in_one_line(tmp_path, capsys):
    from deconvnet.cli import main

    bad = tmp_path / "half.caffemodel"
    bad.write_bytes(b"\x12\xff\xff\x03partial")
    assert main(["convert", str(bad), "--network", "deconvnet", "--out", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deconvnet convert: error: ") and str(bad) in err and "\n" not in err
    assert not (tmp_path / "x.ckpt").exists()
