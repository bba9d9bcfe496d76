"""A ``ddp_spawn`` process's UserError reaches the launching process as itself.

torch.multiprocessing gives the launching process a failed process's exception only as its
traceback text (``ProcessRaisedException``). Here the error crosses as data instead: each
started process that stops with a UserError writes an :class:`~deconvnet.errors.ErrorRecord`
(JSON: class, message, process) into a folder made for the launch, and the launching
process raises the record's error, of the same class with the same message, in place of
the ``ProcessRaisedException``. A process that dies of anything else leaves no record, and
its failure stays as torch reports it.

Lightning runs nothing of ours around the trainer function inside a started process (a
callback's ``on_exception`` runs in the launching process only), so this extends Lightning's
launcher for the processes it starts itself (``DDPStrategy`` with ``start_method`` spawn,
fork or forkserver): :func:`trainer_strategy` turns such a strategy name into
:class:`UserErrorDDPStrategy`, and ``hardware_kwargs`` passes it to every Trainer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import DDPStrategy, Strategy, StrategyRegistry
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from torch.multiprocessing import ProcessRaisedException

from deconvnet.errors import ErrorRecord, UserError
from deconvnet.runtime.atomic import write_text_atomic


class UserErrorSpawnLauncher(_MultiProcessingLauncher):
    """Lightning's launcher for processes it starts, carrying a UserError back (module doc)."""

    records: str | None = None  # this launch's record folder (pickled into each process)

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="deconvnet-processes-") as records:
            self.records = records
            try:
                return super().launch(function, *args, trainer=trainer, **kwargs)
            except ProcessRaisedException as failure:
                record = read_record(Path(records), failure.error_index)
                if record is None:
                    raise
                raise record.error() from failure
            finally:
                self.records = None

    def _wrapping_function(self, process_idx: int, *args: Any, **kwargs: Any) -> None:
        try:
            super()._wrapping_function(process_idx, *args, **kwargs)
        except UserError as error:
            if self.records is not None:
                where = f"spawned process {process_idx}" + (f", {error.where}" if error.where else "")
                record = ErrorRecord.of(error, where)
                write_text_atomic(Path(self.records) / f"{process_idx}.json", record.to_json())
            raise


def read_record(records: Path, index: int) -> ErrorRecord | None:
    """The record process ``index`` left, else the one another process left (its UserError
    is then why this process failed: a collective lost its peer), else None."""
    candidates = [records / f"{index}.json", *sorted(records.glob("*.json"))]
    for path in candidates:
        try:
            return ErrorRecord.from_json(path.read_text())
        except (OSError, ValueError, KeyError):
            continue
    return None


class UserErrorDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose started processes carry a UserError back (see the module doc)."""

    def __init__(self, start_method: str = "spawn", **kwargs: Any) -> None:
        super().__init__(start_method=start_method, **kwargs)  # type: ignore[arg-type]
        self.start_method = start_method

    def _configure_launcher(self) -> None:
        super()._configure_launcher()  # Lightning's launcher, replaced where it starts processes
        if isinstance(self.launcher, _MultiProcessingLauncher):
            self._launcher = UserErrorSpawnLauncher(self, start_method=self.start_method)  # type: ignore[arg-type]


def trainer_strategy(name: str) -> str | Strategy:
    """What to pass as ``Trainer(strategy=...)`` for the config's ``trainer.strategy``: a
    :class:`UserErrorDDPStrategy` where ``name`` is Lightning's DDP that starts its own
    processes (ddp_spawn, ddp_fork, ... with their registered settings), ``name`` otherwise."""
    entry = StrategyRegistry[name] if name in StrategyRegistry else None
    if entry is None or entry["strategy"] is not DDPStrategy:
        return name
    settings = dict(entry["init_params"])
    if settings.get("start_method", "popen") == "popen":  # torchrun-style: no process to wait for
        return name
    return UserErrorDDPStrategy(**settings)
