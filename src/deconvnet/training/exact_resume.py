"""Exact resume: a run killed and resumed ends with the same weights as one never stopped
(on the CPU with ``data.num_workers=0``; see below for workers).

What a ``last.ckpt`` needs besides the weights, optimiser and step (Lightning's part):

- the position in the epoch: the training loader's sampler (:class:`ResumableRandomSampler`,
  :class:`ResumableDistributedSampler`) keeps the epoch's order and, resumed, starts at the
  batch where the run stopped instead of at a new shuffle of the whole epoch (a run saved
  after an epoch's last batch goes on with the next epoch, as Lightning does);
- every random generator: Python's, NumPy's, torch's (CPU and CUDA) as they were when the
  checkpoint was written (restored just before the next training step), and the
  augmentation's (albumentations' own generators, as they were before the next batch was
  drawn: the loader fetches one batch ahead of training).

The samplers draw their order exactly as the loaders did before (``RandomSampler``: a seed
from torch's generator when an epoch starts; under DDP Lightning's ``DistributedSampler``
with ``PL_GLOBAL_SEED``), so an uninterrupted run trains as it always did.

With ``data.num_workers > 0`` the order and the network's random draws are restored, but
each worker process reseeds its augmentation per epoch, so the crops after a resume differ.
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
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from deconvnet.data.loader import UserErrorDataLoader


class ResumableRandomSampler(Sampler[int]):
    """``RandomSampler``'s order (a seed drawn from torch's generator at each epoch's start)
    that remembers the epoch's seed and can restart the epoch at a given batch."""

    def __init__(self, data_source: Dataset, batch_size: int) -> None:
        self.data_source = data_source
        self.batch_size = batch_size
        self.epoch_seed: int | None = None
        self.resume_at: tuple[int, int] | None = None  # (epoch seed, first batch)
        self.before_batch: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return len(self.data_source)

    def _order(self) -> tuple[list[int], int]:
        if self.resume_at is not None:
            seed, start = self.resume_at
            self.resume_at = None
        else:
            seed, start = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.epoch_seed = seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        return torch.randperm(len(self.data_source), generator=generator).tolist(), start

    def __iter__(self) -> Iterator[int]:
        order, start = self._order()
        yield from _from_batch(order, start, self.batch_size, self.before_batch)


class ResumableDistributedSampler(DistributedSampler):
    """Lightning's training ``DistributedSampler`` (shuffled by ``seed`` + epoch) that can
    restart the epoch at a given batch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=int(os.getenv("PL_GLOBAL_SEED", 0)))
        self.batch_size = batch_size
        self.epoch_seed: int | None = None
        self.resume_at: tuple[int, int] | None = None
        self.before_batch: Callable[[int], None] | None = None

    def __iter__(self) -> Iterator[int]:
        start = 0
        if self.resume_at is not None:
            start = self.resume_at[1]
            self.resume_at = None
        self.epoch_seed = self.epoch
        yield from _from_batch(list(super().__iter__()), start, self.batch_size, self.before_batch)


def _from_batch(order: list[int], start: int, batch_size: int,
                before_batch: Callable[[int], None] | None) -> Iterator[int]:
    for position in range(start * batch_size, len(order)):
        if position % batch_size == 0 and before_batch is not None:
            before_batch(position // batch_size)  # the batch's samples are drawn next
        yield order[position]


class ResumableDataLoader(UserErrorDataLoader):
    """A DataLoader Lightning counts as resumable (it has ``state_dict``): its position is
    kept by :class:`ExactResume` with the random generators, so there is nothing more here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None


def resumable_loader(loader: DataLoader, world: int, rank: int) -> DataLoader:
    """The training ``loader`` with a resumable sampler in place of its shuffling."""
    if world > 1:
        sampler: Sampler = ResumableDistributedSampler(loader.dataset, world, rank, loader.batch_size)
    else:
        sampler = ResumableRandomSampler(loader.dataset, loader.batch_size)
    return ResumableDataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
        num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
        pin_memory=loader.pin_memory, collate_fn=loader.collate_fn,
        worker_init_fn=loader.worker_init_fn,
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


def _augmentation(dataset: Any) -> Any:
    """The albumentations pipeline of a training dataset (``SeededTransform.pipeline``), or None."""
    return getattr(getattr(dataset, "augment", None), "pipeline", None)


def _generators(pipeline: Any) -> list[Any]:
    """The pipeline and every transform in it: each keeps its own pair of generators."""
    out = [pipeline]
    for transform in getattr(pipeline, "transforms", []):
        out.extend(_generators(transform))
    return out


def _augmentation_state(pipeline: Any) -> list[dict[str, Any]]:
    return [{"numpy": t.random_generator.bit_generator.state, "python": t.py_random.getstate()}
            for t in _generators(pipeline)]


def _set_augmentation_state(pipeline: Any, state: list[dict[str, Any]]) -> None:
    for transform, saved in zip(_generators(pipeline), state, strict=True):
        transform.random_generator.bit_generator.state = saved["numpy"]
        transform.py_random.setstate(saved["python"])


class ExactResume(Callback):
    """Saves the loader position and every random generator in ``last.ckpt`` and restores
    them on resume (see the module doc). Install with :meth:`install` before ``fit``."""

    def __init__(self, crop_size: int) -> None:
        self.crop_size = crop_size
        self.sampler: ResumableRandomSampler | ResumableDistributedSampler | None = None
        self.dataset: Any = None
        self._batches_done = 0
        self._before: dict[int, dict] = {}  # batch -> augmentation state before it was drawn
        self._loaded: dict[str, Any] | None = None
        self._rng_to_restore: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def install(self, datamodule: LightningDataModule) -> None:
        """Make ``datamodule.train_dataloader()`` return a resumable loader watched by this callback."""
        datamodule.train_dataloader = _ResumableTrainLoader(datamodule, self)  # type: ignore[method-assign]

    def watch(self, loader: DataLoader) -> None:
        self.sampler, self.dataset = loader.sampler, loader.dataset
        self.sampler.before_batch = self._before_batch

    def _before_batch(self, batch: int) -> None:
        pipeline = _augmentation(self.dataset)
        if pipeline is not None and torch.utils.data.get_worker_info() is None:
            self._before = {k: v for k, v in self._before.items() if k >= batch - 4}
            self._before[batch] = _augmentation_state(pipeline)

    # ---- saving -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        augmentation = self._before.get(self._batches_done)  # the next batch already drawn
        pipeline = _augmentation(self.dataset)
        if augmentation is None and pipeline is not None:  # not drawn yet: the state is now
            augmentation = _augmentation_state(pipeline)
        return {
            "rng": _global_rng(),
            "epoch_seed": None if sampler is None else sampler.epoch_seed,
            "batches_done": self._batches_done,
            "augmentation": augmentation,
        }

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
        # Saved after an epoch's last batch, the run goes on with the next epoch, whose
        # loader draws its seeds from the generators: restore them now, before it starts.
        # Saved within an epoch, the run finishes that epoch's order from the next batch.
        epoch_finished = int(state["batches_done"]) >= trainer.num_training_batches
        if state.get("epoch_seed") is not None and not epoch_finished:
            self.sampler.resume_at = (int(state["epoch_seed"]), int(state["batches_done"]))
            self._batches_done = int(state["batches_done"])
        pipeline = _augmentation(self.dataset)
        if pipeline is not None and state.get("augmentation") is not None:
            # the transform reseeds itself on its first call in a process: let it, then restore
            size = self.crop_size
            self.dataset.augment(np.zeros((size, size, 3), np.uint8), np.zeros((size, size), np.uint8))
            _set_augmentation_state(pipeline, state["augmentation"])
        if epoch_finished:
            _set_global_rng(state["rng"])
        else:
            self._rng_to_restore = state["rng"]

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # after the loader's own draws at its start
            _set_global_rng(self._rng_to_restore)
            self._rng_to_restore = None
