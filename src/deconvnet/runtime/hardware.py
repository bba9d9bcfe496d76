"""Whether this machine has the accelerator and devices a config asks for.

Checked where a run starts (train, eval) rather than in ``load_config``: the same recipe is
loaded on a laptop to compute proposals, check data or run tests, where its GPU is absent.
"""

from __future__ import annotations

from omegaconf import DictConfig

from deconvnet.config import ConfigError


def check_hardware(trainer_cfg: DictConfig) -> None:
    """Refuse an accelerator (or more devices) than this machine has, with the fix: Lightning
    would stop later with a traceback. Imports torch, so it runs where a run starts."""
    accelerator = str(trainer_cfg.accelerator)
    if accelerator not in ("gpu", "cuda", "mps"):
        return
    import torch

    on_cpu = ("run on the CPU instead with trainer.accelerator=cpu trainer.devices=1 (for example "
              "`make train-stage1 ARGS=\"trainer.accelerator=cpu trainer.devices=1\"`)")
    if accelerator == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"trainer.accelerator=mps but this machine has no Apple GPU; {on_cpu}")
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU "
            f"(torch.cuda.is_available() is False); {on_cpu}"
        )
    devices = trainer_cfg.devices
    if isinstance(devices, int) and devices > available:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {available} CUDA GPU(s); set "
            f"trainer.devices={available} (or auto), or run across nodes with trainer.num_nodes"
        )
