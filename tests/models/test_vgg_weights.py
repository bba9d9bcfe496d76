"""load_vgg16: every tensor copied where it belongs; bad state dicts named key by key."""

from __future__ import annotations

import pytest
import torch

from deconvnet.errors import WeightsError
from deconvnet.models import DeconvNet, FCN8s

CONV_KEYS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16 features.N


def expected_pairs(net) -> dict[str, torch.Tensor]:
    """torchvision key -> the network tensor that must hold it, written out by hand."""
    convs = [m for stage in net.encoder for m in stage if isinstance(m, torch.nn.Conv2d)]
    pairs = {}
    for index, conv in zip(CONV_KEYS, convs):
        pairs[f"features.{index}.weight"] = conv.weight
        pairs[f"features.{index}.bias"] = conv.bias
    pairs["classifier.0.weight"] = net.fc6.fc6.weight
    pairs["classifier.0.bias"] = net.fc6.fc6.bias
    pairs["classifier.3.weight"] = net.fc7.fc7.weight
    pairs["classifier.3.bias"] = net.fc7.fc7.bias
    return pairs


@pytest.mark.parametrize("cls", [DeconvNet, FCN8s])
def test_every_copied_tensor_equals_its_source(cls, vgg16_state, vgg16_file, empty_network):
    net = empty_network(cls)
    untouched = [v for k, v in net.state_dict().items() if "bn" in k or "score" in k]
    for tensor in untouched:  # uninitialised memory may hold NaNs: give it a known value
        tensor.fill_(7.0)
    report = net.load_vgg16(vgg16_file)  # from the file ...
    assert len(report) == 30 and set(report) == set(expected_pairs(net))
    params = dict(net.named_parameters())
    for key, target in expected_pairs(net).items():
        source = vgg16_state[key]
        assert params[report[key]] is target
        if key.startswith("classifier.") and key.endswith(".weight"):
            assert source.dim() == 2 and target.dim() == 4
        assert torch.equal(target, source.reshape(target.shape)), key
    # fc6 keeps torchvision's flattening order: out x (C, H, W)
    assert torch.equal(net.fc6.fc6.weight[5, 3, 2, 6], vgg16_state["classifier.0.weight"][5, 3 * 49 + 2 * 7 + 6])
    assert all(torch.all(tensor == 7.0) for tensor in untouched)  # BN / score layers untouched


def test_loading_from_a_state_dict_in_memory(vgg16_state, empty_network):
    net = empty_network(FCN8s)
    report = net.load_vgg16(vgg16_state)
    assert report["features.28.weight"] == "encoder.4.conv5_3.weight"
    assert report["classifier.3.weight"] == "fc7.fc7.weight"
    assert torch.equal(net.fc7.fc7.weight.flatten(1), vgg16_state["classifier.3.weight"])


def test_mismatching_networks_name_every_offending_key(vgg16_state):
    net = DeconvNet(input_size=64, width=1 / 16)
    before = net.encoder[0].conv1_1.weight.clone()
    with pytest.raises(WeightsError) as info:
        net.load_vgg16(vgg16_state)
    message = str(info.value)
    assert "30 offending key(s)" in message
    assert "features.0.weight: expected 4x3x3x3, found 64x3x3x3" in message
    assert "features.28.bias: expected 32, found 512" in message
    assert "classifier.0.weight: expected 256x128, found 4096x25088" in message  # 32 x 2 x 2
    assert "width=1.0" in message and "input_size=224" in message
    assert torch.equal(net.encoder[0].conv1_1.weight, before)  # nothing half-loaded


def test_deconvnet_fc6_only_fits_at_224(vgg16_state, empty_network):
    net = empty_network(DeconvNet, input_size=96)
    with pytest.raises(WeightsError) as info:
        net.load_vgg16(vgg16_state)
    message = str(info.value)
    assert "1 offending key(s)" in message
    assert "classifier.0.weight: expected 4096x4608, found 4096x25088" in message


def test_missing_and_malformed_keys_are_all_listed(vgg16_state, empty_network):
    state = dict(vgg16_state)
    del state["features.10.weight"]
    del state["classifier.3.bias"]
    state["features.0.bias"] = torch.zeros(3)
    state["features.2.weight"] = [1, 2, 3]
    with pytest.raises(WeightsError) as info:
        empty_network(FCN8s).load_vgg16(state)
    message = str(info.value)
    assert "4 offending key(s)" in message
    assert "features.10.weight: missing (expected 256x128x3x3)" in message
    assert "classifier.3.bias: missing (expected 4096)" in message
    assert "features.0.bias: expected 64, found 3" in message
    assert "features.2.weight: expected a tensor, found list" in message


def test_a_vgg16_bn_state_dict_is_refused():
    import torchvision

    with torch.device("meta"):
        state = torchvision.models.vgg16_bn().state_dict()
        net = FCN8s()
    with pytest.raises(WeightsError, match="not vgg16_bn"):
        net.load_vgg16(state)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(WeightsError, match=str(missing).replace("\\", "\\\\")):
        DeconvNet(input_size=64, width=1 / 16).load_vgg16(missing)


def test_unreadable_files_are_reported(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="could not read VGG16 weights from .*garbage.pth"):
        FCN8s(width=1 / 16).load_vgg16(garbage)
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        FCN8s(width=1 / 16).load_vgg16(a_list)
