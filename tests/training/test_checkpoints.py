"""Checkpoint files: atomic writes, load_network and its errors, resume discovery."""

from pathlib import Path

import pytest
import torch

from deconvnet.errors import WeightsError
from deconvnet.models import DeconvNet, FCN8s
from deconvnet.training import checkpoints
from deconvnet.training.checkpoints import (
    AtomicCheckpointIO,
    atomic_torch_save,
    find_resume_checkpoint,
    load_network,
    load_weights_into,
)

MODEL = {"name": "deconvnet", "num_classes": 21, "input_size": 64, "width": 0.0625,
         "pretrained": "none", "weights_style": "torchvision", "init_from": None}


def _fake_training_checkpoint(path: Path, net: torch.nn.Module, model: dict, step: int = 3) -> Path:
    """What a training run writes: net.* weights, the model section, the step."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    atomic_torch_save({"state_dict": state, "hyper_parameters": {"model": model}, "global_step": step}, path)
    return path


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_checkpoint_io_writes_atomically(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 5, "state_dict": {}}, tmp_path / "sub" / "a.ckpt")
    assert io.load_checkpoint(tmp_path / "sub" / "a.ckpt")["global_step"] == 5


def test_load_network_rebuilds_the_network_with_its_weights(tmp_path):
    torch.manual_seed(0)
    net = DeconvNet(num_classes=21, input_size=64, width=0.0625)
    with torch.no_grad():
        net.fc6.bnfc6.running_mean.uniform_()
    path = _fake_training_checkpoint(tmp_path / "final.ckpt", net, MODEL)
    loaded = load_network(path, expect={"name": "deconvnet", "num_classes": 21, "width": 123})
    assert isinstance(loaded, DeconvNet) and not loaded.training
    assert loaded.model_config["input_size"] == 64
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_wrong_network_or_class_count_says_which(tmp_path):
    path = _fake_training_checkpoint(tmp_path / "d.ckpt", DeconvNet(21, 64, 0.0625), MODEL)
    with pytest.raises(WeightsError, match=r"deconvnet network.*fcn8s.*\(name\)"):
        load_network(path, expect="fcn8s")
    with pytest.raises(WeightsError, match=r"21 classes.*number of classes of 5"):
        load_network(path, expect={"num_classes": 5})


def test_weights_that_do_not_fit_are_explained(tmp_path):
    path = _fake_training_checkpoint(tmp_path / "d.ckpt", DeconvNet(21, 64, 0.0625), MODEL)
    with pytest.raises(WeightsError, match="shape mismatch.*model.width"):
        load_weights_into(DeconvNet(21, 64, 0.125), path)
    fcn = FCN8s(num_classes=21, width=0.0625)
    with pytest.raises(WeightsError, match="missing"):
        load_weights_into(fcn, path)


def test_unreadable_and_foreign_files_raise_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_network(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        load_network(garbage)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(WeightsError, match=r"hyper_parameters\['model'\]"):
        load_network(bare)


def test_resume_discovery(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    atomic_torch_save({}, tmp_path / "checkpoints" / "last.ckpt")
    assert find_resume_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
