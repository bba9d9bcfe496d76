"""Exact resume: a run killed and resumed ends with the same weights as one never stopped
(on the CPU, with any number of loader workers).

What a ``last.ckpt`` needs besides the weights, optimiser and step (Lightning's part):

- the position in the epoch: the training loader's sampler (:class:`ResumableSampler`) keeps
  the epoch's order and, resumed, starts at the batch where the run stopped instead of at a
  new shuffle of the whole epoch (a run saved after an epoch's last batch goes on with the
  next epoch, as Lightning does);
- every random generator: Python's, NumPy's, torch's (CPU and CUDA) as they were when the
  checkpoint was written (restored just before the next training step).

The augmentation needs nothing saved: the sampler hands the loader ``(index, seed)`` pairs,
each seed a hash of the run's seed, the epoch and the index, and every sample is drawn with
torch's generator seeded with its own seed (:mod:`deconvnet.data.sample_seeds`). The
epoch's crops and flips are thus the same whichever worker draws which sample, with any
number of workers, and the resumed epoch draws what the uninterrupted one drew.

The order is ``DistributedSampler``'s (``PL_GLOBAL_SEED`` + the epoch), with one process too.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from deconvnet.data.loader import UserErrorDataLoader
from deconvnet.data.sample_seeds import SeededSamples, sample_seed


class ResumableSampler(DistributedSampler):
    """The training sampler, with one process or many: ``DistributedSampler``'s shuffle (a
    permutation seeded with the run's seed + the epoch, which Lightning sets) as ``(index,
    sample seed)`` pairs, that can restart the epoch at a given batch. Nothing in it draws
    from torch's global generator, so the order and the samples' seeds do not depend on what
    else drew from it (a DataLoader draws a seed for its workers when it starts an iterator,
    except when persistent workers restart one)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=int(os.getenv("PL_GLOBAL_SEED", 0)))
        self.batch_size = batch_size
        self.first_batch = 0  # where the next iteration starts (a resumed epoch), then 0 again

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.first_batch, epoch = self.first_batch, 0, self.epoch
        yield from _from_batch(list(super().__iter__()), start, self.batch_size,
                               lambda index: sample_seed(self.seed, epoch, index))


def _from_batch(order: list[int], start: int, batch_size: int,
                seed_of: Callable[[int], int]) -> Iterator[tuple[int, int]]:
    """``order`` from batch ``start`` on, each index with its sample seed."""
    for index in order[start * batch_size:]:
        yield index, seed_of(index)


class ResumableDataLoader(UserErrorDataLoader):
    """A DataLoader Lightning counts as resumable (it has ``state_dict``): its position is
    kept by :class:`ExactResume` with the random generators, so there is nothing more here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None


def resumable_loader(loader: DataLoader, world: int, rank: int) -> DataLoader:
    """The training ``loader`` with a resumable sampler in place of its shuffling, its
    samples drawn with their own seeds, and a generator of its own for its workers' seeds
    (they decide nothing now), so that it leaves torch's global generator alone."""
    return ResumableDataLoader(
        SeededSamples(loader.dataset), batch_size=loader.batch_size,
        sampler=ResumableSampler(loader.dataset, world, rank, loader.batch_size),
        drop_last=loader.drop_last, num_workers=loader.num_workers,
        persistent_workers=loader.persistent_workers, pin_memory=loader.pin_memory,
        collate_fn=loader.collate_fn, worker_init_fn=loader.worker_init_fn, generator=torch.Generator(),
    )


class _ResumableTrainLoader:
    """``datamodule.train_dataloader`` replaced: the DataModule's loader made resumable. An
    object rather than a closure: ``ddp_spawn`` pickles the DataModule with it."""

    def __init__(self, datamodule: LightningDataModule, callback: ExactResume) -> None:
        self.datamodule = datamodule
        self.callback = callback

    def __call__(self) -> DataLoader:
        datamodule = self.datamodule
        trainer = getattr(datamodule, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        loader = resumable_loader(type(datamodule).train_dataloader(datamodule), world, rank)
        self.callback.watch(loader)
        return loader


def _global_rng() -> dict[str, Any]:
    """Every global generator's state, in types a ``weights_only`` checkpoint load accepts."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExactResume(Callback):
    """Saves the loader position and every random generator in ``last.ckpt`` and restores
    them on resume (see the module doc). Install with :meth:`install` before ``fit``."""

    def __init__(self) -> None:
        self.sampler: ResumableSampler | None = None
        self._batches_done = 0
        self._loaded: dict[str, Any] | None = None
        self._rng_to_restore: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def install(self, datamodule: LightningDataModule) -> None:
        """Make ``datamodule.train_dataloader()`` return a resumable loader watched by this callback."""
        datamodule.train_dataloader = _ResumableTrainLoader(datamodule, self)  # type: ignore[method-assign]

    def watch(self, loader: DataLoader) -> None:
        self.sampler = loader.sampler

    # ---- saving -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _global_rng(), "batches_done": self._batches_done}

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._batches_done = 0  # (not called when a run resumes in the middle of an epoch)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._batches_done += 1

    # ---- restoring --------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._loaded = self._loaded, None
        if state is None or self.sampler is None:
            return
        # Saved after an epoch's last batch, the run goes on with the next epoch (its order
        # comes from the epoch number): restore the generators now, before it starts. Saved
        # within an epoch, the run finishes that epoch's order from the next batch.
        epoch_finished = int(state["batches_done"]) >= trainer.num_training_batches
        if not epoch_finished:
            self.sampler.first_batch = self._batches_done = int(state["batches_done"])
        if epoch_finished:
            _set_global_rng(state["rng"])
        else:
            self._rng_to_restore = state["rng"]

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # after the loader's own draws at its start
            _set_global_rng(self._rng_to_restore)
            self._rng_to_restore = None
