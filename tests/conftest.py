"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

SYNTHETIC_IMAGES = 24
SYNTHETIC_SIZE = 128


@pytest.fixture(autouse=True)
def _restore_environment():
    """Environment variables a test (or the library under it) sets are removed after it:
    Lightning's ddp_spawn leaves MASTER_PORT/MASTER_ADDR, W&B leaves WANDB_SERVICE, and a
    later test would otherwise inherit them (a stale port, a dead W&B service)."""
    saved = dict(os.environ)
    yield
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _seeded_and_one_thread():
    """Every test starts from the same random state, whatever ran before it, and computes
    with one intra-op thread: tiny networks gain nothing from more, and on a busy machine
    OpenMP threads wait on each other for seconds (and reductions change with the count)."""
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root folder of a small synthetic VOC tree (``<root>/VOCdevkit/VOC2012``).

    24 images, longer side 128 px, seed 0; train/val/trainval lists (17/7/24 images).
    Shared by the whole session: treat it as read-only (copy it to break or extend it).
    """
    from deconvnet.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic_voc")
    generate(root, num_images=SYNTHETIC_IMAGES, seed=0, size=SYNTHETIC_SIZE)
    return root


def write_tiny_checkpoint(path: Path, name: str, **model: object) -> Path:
    """A checkpoint in the layout `deconvnet train` writes, around a tiny random network."""
    import torch

    from deconvnet.models import build_model

    section = {"name": name, "num_classes": 21, "input_size": 32, "width": 0.0625,
               "pretrained": "none", "weights_style": "torchvision", "init_from": None, **model}
    torch.manual_seed(0)
    net = build_model(section)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model": section}, "global_step": 1}, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random DeconvNet (32-px windows) and FCN-8s checkpoints, as `deconvnet train` writes."""
    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    return {"deconvnet": write_tiny_checkpoint(folder / "deconvnet.ckpt", "deconvnet"),
            "fcn8s": write_tiny_checkpoint(folder / "fcn8s.ckpt", "fcn8s")}


@pytest.fixture(scope="session")
def tiny_checkpoint_factory():
    """write_tiny_checkpoint(path, name, **model_overrides) for tests that need other variants."""
    return write_tiny_checkpoint


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """W&B kept offline, silent and inside tmp_path; returns its folder.

    The service timeouts are generous: on a busy machine the W&B service (and, under
    ddp_spawn, a spawned rank attaching to it) can take longer than the 30 s default."""
    home = tmp_path / "wandb-home"
    for var, value in {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(home),
        "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"), "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
        "WANDB_DISABLE_GIT": "true", "NETRC": str(tmp_path / "no-netrc"),
        "WANDB__SERVICE_WAIT": "300",  # settings.x_service_wait: the service's start-up
        "WANDB_INIT_TIMEOUT": "300",  # settings.init_timeout: wandb.init waiting for the run
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("WANDB_API_KEY", "WANDB_SERVICE", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT",
                "WANDB_ENTITY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def _wandb_never_leaves_the_test(offline_wandb: Path):
    """Every test, whether it means to start W&B or not, finds it offline and writing into
    its own tmp_path: nothing reaches the network or the user's home W&B folders. A W&B
    service the test started is shut down after it, so the next test starts its own."""
    yield
    _wandb_teardown()


def _wandb_teardown() -> None:
    """Shut down this process's W&B service, if one was started (waits until it has exited)."""
    setup = sys.modules.get("wandb.sdk.wandb_setup")
    if setup is not None and getattr(setup, "_singleton", None) is not None:
        setup.teardown()


@pytest.fixture
def wandb_flushed():
    """Call it before reading an offline run this process wrote. W&B's service writes the
    run file asynchronously: under load its last records (e.g. the eval metrics) reach the
    disk after run.finish() has returned; shutting the service down waits for them."""
    return _wandb_teardown
