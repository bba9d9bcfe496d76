"""Per-sample seeds: a training sample's draws depend on the sample, not on who draws it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from deconvnet.data.sample_seeds import SeededSamples, sample_seed
from deconvnet.data.transforms import RandomCropFlip
from deconvnet.training.exact_resume import ResumableSampler, resumable_loader


def test_sample_seeds_are_a_hash_of_their_entropy():
    assert sample_seed(7, 3) == sample_seed(7, 3)
    seeds = {sample_seed(epoch, index) for epoch in range(4) for index in range(50)}
    assert len(seeds) == 200  # no two (epoch, index) pairs share a seed
    assert sample_seed(1, 2) != sample_seed(2, 1)
    # SeedSequence's first 64-bit word, halved into torch's range, computed here apart
    word = np.random.SeedSequence([7, 3]).generate_state(2, np.uint32)
    assert sample_seed(7, 3) == ((int(word[1]) << 32) | int(word[0])) >> 1
    assert all(0 <= s < 2**63 for s in seeds)
    torch.manual_seed(max(seeds))  # torch accepts every one


class _Draws(Dataset):
    """Item k: k with three numbers from torch's generator and an augmented 8 x 8 crop."""

    def __init__(self) -> None:
        self.augment = RandomCropFlip(8)
        self.image = np.arange(12 * 12 * 3, dtype=np.uint8).reshape(12, 12, 3)

    def __len__(self) -> int:
        return 40

    def __getitem__(self, k: int) -> dict:
        crop, _ = self.augment(self.image, self.image[:, :, 0].copy())
        return {"k": k, "draws": torch.rand(3), "crop": torch.from_numpy(crop.copy())}


def test_a_seeded_sample_is_the_same_whenever_it_is_drawn_and_leaves_the_callers_generator():
    samples = SeededSamples(_Draws())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = samples[(5, 123)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is untouched
    torch.rand(100)  # whatever the caller's generator does in between
    again = samples[(5, 123)]
    assert first["k"] == again["k"] == 5
    assert torch.equal(first["draws"], again["draws"]) and torch.equal(first["crop"], again["crop"])
    other = samples[(5, 124)]
    assert not torch.equal(first["draws"], other["draws"])
    assert len(samples) == 40 and isinstance(samples.augment, RandomCropFlip)  # the dataset's own


def test_seeding_a_sample_leaves_every_accelerators_generator_alone(monkeypatch):
    # fork_rng(devices=[]) restores the CPU generator only: with num_workers=0 on a GPU, a
    # reseeded CUDA generator would give dropout the last sample's seed in every step.
    reseeded = []
    for module, name in ((torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"),
                         (torch.mps, "manual_seed"), (torch.xpu, "manual_seed_all")):
        monkeypatch.setattr(module, name, lambda seed, _n=f"{module.__name__}.{name}": reseeded.append(_n))
    samples = SeededSamples(_Draws())
    first = samples[(5, 123)]
    assert reseeded == []
    torch.manual_seed(123)  # what the sample's draws must equal: torch's CPU generator at 123
    assert reseeded  # (the patches do catch a full reseed)
    assert torch.equal(first["draws"], _Draws()[5]["draws"])


def _epoch(num_workers: int, run_seed: int = 0, epoch: int = 0,
           first_batch: int = 0) -> list[dict]:
    """One epoch of a resumable loader over :class:`_Draws`, in batches of 4."""
    loader = resumable_loader(DataLoader(_Draws(), batch_size=4, shuffle=True, drop_last=True,
                                         num_workers=num_workers), world=1, rank=0)
    assert isinstance(loader.sampler, ResumableSampler)
    loader.sampler.seed = run_seed  # PL_GLOBAL_SEED in a run
    loader.sampler.set_epoch(epoch)
    loader.sampler.first_batch = first_batch
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.get_rng_state(), before)  # the loader left torch's generator alone
    return batches


@pytest.mark.parametrize("workers", [1, 2])
def test_an_epochs_draws_do_not_depend_on_the_loader_workers(workers):
    alone, pooled = _epoch(num_workers=0), _epoch(num_workers=workers)
    assert len(alone) == len(pooled) == 10
    for a, b in zip(alone, pooled, strict=True):
        assert torch.equal(a["k"], b["k"]) and torch.equal(a["draws"], b["draws"])
        assert torch.equal(a["crop"], b["crop"])
    # different samples draw differently; another epoch or run seed gives another order and draws
    assert not torch.equal(alone[0]["draws"][0], alone[0]["draws"][1])
    def draws_by_sample(batches):
        return {int(k): d for batch in batches for k, d in zip(batch["k"], batch["draws"], strict=True)}

    mine = draws_by_sample(alone)
    for other in (_epoch(num_workers=0, epoch=1), _epoch(num_workers=0, run_seed=1)):
        assert not torch.equal(other[0]["k"], alone[0]["k"])
        theirs = draws_by_sample(other)
        shared = mine.keys() & theirs.keys()
        assert len(shared) >= 20  # the same samples, drawn anew
        assert not any(torch.equal(mine[k], theirs[k]) for k in shared)


def test_an_epoch_resumed_at_a_batch_draws_what_the_whole_epoch_drew_from_there():
    whole = _epoch(num_workers=0, epoch=3)
    tail = _epoch(num_workers=2, epoch=3, first_batch=6)
    assert len(tail) == 4
    for a, b in zip(whole[6:], tail, strict=True):
        assert torch.equal(a["k"], b["k"]) and torch.equal(a["draws"], b["draws"])
        assert torch.equal(a["crop"], b["crop"])
