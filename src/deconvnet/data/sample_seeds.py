"""Per-sample seeds: a training sample's random draws depend on the sample, not on the process.

The training sampler (:mod:`deconvnet.training.exact_resume`) hands the loader ``(index,
seed)`` pairs, the seed a hash of the run's seed, the epoch and the index, and
:class:`SeededSamples` draws each item with torch's generator seeded with it (the
augmentation draws from torch's generator: :class:`~deconvnet.data.transforms.RandomCropFlip`,
in the loader workers or for the device pipeline's window descriptions). So the crops and
flips of an epoch are the same with any number of loader workers, and a run resumed in the
middle of an epoch draws what the uninterrupted run drew, whichever worker fetches which
batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deconvnet.data.loader import DatasetWrapper


def sample_seed(*entropy: int) -> int:
    """A seed for torch's generator (0 <= seed < 2^63) mixed from non-negative integers
    (the run's seed, the epoch, the sample's index) by NumPy's ``SeedSequence`` hash."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, np.uint64)[0] >> 1)


class SeededSamples(DatasetWrapper):
    """``dataset`` whose items are asked for as ``(index, seed)``: item ``index`` drawn with
    torch's CPU generator seeded with ``seed``; the caller's generator is left as it was."""

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        # The CPU generator only: ``torch.manual_seed`` would also reseed every accelerator's
        # generator, which fork_rng(devices=[]) does not restore (with num_workers=0 on a GPU,
        # dropout would follow the last sample's seed), and it costs 0.27 ms a call here
        # against 0.002 ms.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
