"""The DataLoader of every DataModule: a worker's UserError reaches the caller as itself.

PyTorch re-raises an exception of a DataLoader worker as its class built from the worker's
formatted traceback ("Caught DataError in DataLoader worker process 0. Original
Traceback ..."): the user would read a traceback, not the one-line message. Here the error
crosses as data instead:

- in a worker, the dataset (wrapped by :class:`_CatchInWorker`) returns the sample's
  UserError as an :class:`~deconvnet.errors.ErrorRecord` (class, message, worker, sample);
- the collate function (wrapped by :class:`_KeepRecords`) passes such a record on as the
  batch, so the worker sends it back like any batch;
- the main process (:meth:`UserErrorDataLoader.__iter__`) raises the record's error, of
  the same class with the same message.

In the main process itself (``num_workers=0``) nothing is caught: the error is raised as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from deconvnet.errors import ErrorRecord, UserError


class DatasetWrapper(Dataset):
    """A dataset around ``dataset``: the same length, and other attributes read as the
    wrapped dataset's (its ``augment``, ``describe()``, ...). Subclasses define ``__getitem__``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _CatchInWorker(DatasetWrapper):
    """``dataset`` whose samples, in a DataLoader worker, are an ErrorRecord where the
    dataset raised a UserError."""

    def __getitem__(self, index: Any) -> Any:
        try:
            return self.dataset[index]
        except UserError as error:
            worker = get_worker_info()
            if worker is None:  # the loader's own process: nothing to carry
                raise
            return ErrorRecord.of(error, f"DataLoader worker {worker.id}, sample {index}")


class _KeepRecords:
    """A collate function that returns the first ErrorRecord among the samples as the
    batch, and collates the samples with ``collate`` otherwise."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list) -> Any:
        for sample in samples:
            if isinstance(sample, ErrorRecord):
                return sample
        return self.collate(samples)


class UserErrorDataLoader(DataLoader):
    """A ``torch.utils.data.DataLoader`` (same arguments, batched loading) that raises a
    worker's UserError in the iterating process as the same class with the same message
    (see the module doc). ``where`` on the error names the worker and the sample."""

    def __init__(self, dataset: Dataset, **kwargs: Any) -> None:
        # Idempotent: Lightning and training rebuild loaders from an existing one's dataset
        if not isinstance(dataset, _CatchInWorker):
            dataset = _CatchInWorker(dataset)
        collate = kwargs.get("collate_fn") or default_collate
        if not isinstance(collate, _KeepRecords):
            collate = _KeepRecords(collate)
        super().__init__(dataset, **{**kwargs, "collate_fn": collate})

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if isinstance(batch, ErrorRecord):
                raise batch.error()
            yield batch
