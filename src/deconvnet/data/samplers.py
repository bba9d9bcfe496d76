"""A distributed evaluation sampler that counts every image exactly once.

PyTorch's ``DistributedSampler`` pads the index list by repeating samples so that every
process gets the same number; evaluated that way, some images are scored twice. Here
rank r of w processes gets indices r, r + w, r + 2w, ... and nothing else: the ranks may
get one image more or less than each other, and together they see each index once.

It subclasses ``DistributedSampler`` only so that Lightning recognises it as distributed
and leaves it in place instead of wrapping it in its own (padding) sampler; no trainer
option is needed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch.distributed as dist
from torch.utils.data import DistributedSampler


def distributed_context() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, or (1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class EvalDistributedSampler(DistributedSampler):
    """Indices ``rank, rank + num_replicas, ...`` of ``range(len(dataset))``, in order, no padding."""

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        world, current = distributed_context()
        num_replicas = world if num_replicas is None else int(num_replicas)
        rank = current if rank is None else int(rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.dataset_size = len(dataset)
        self.indices = list(range(self.rank, self.dataset_size, self.num_replicas))
        self.num_samples = len(self.indices)  # DistributedSampler's attribute, without the padding
        self.total_size = self.dataset_size

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples
