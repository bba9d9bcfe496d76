"""Errors caused by the user's input (files, data, configs, checkpoints).

The CLI prints them as one clear message and exits with status 2, without a
traceback: the message itself must say what is wrong and how to fix it.

Raised in another process (a DataLoader worker, a ``ddp_spawn`` rank), such an error
crosses back as data, never as text to parse: the process that raised it catches it and
sends an :class:`ErrorRecord` (its class and message), and the process that waits for the
result raises the same class again from the record
(``deconvnet.data.loader.UserErrorDataLoader``, ``deconvnet.runtime.spawn_errors``).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass


class UserError(Exception):
    """Bad input the user can fix; the message names the file or key and the fix.

    ``where`` says which other process raised it ("" when it was raised here).
    """

    where: str = ""


class DataError(UserError, ValueError):
    """A dataset file or folder that is missing, corrupt or inconsistent."""


class WeightsError(UserError, ValueError):
    """A weights file or state dict that does not fit the network."""


@dataclass(frozen=True)
class ErrorRecord:
    """A :class:`UserError` as plain data, to carry it out of another process.

    ``type`` is the class's import path (``module.QualName``), ``message`` its message and
    ``where`` the process that raised it (for example "DataLoader worker 0, sample 7").
    """

    type: str
    message: str
    where: str = ""

    @classmethod
    def of(cls, error: UserError, where: str) -> ErrorRecord:
        kind = type(error)
        return cls(f"{kind.__module__}.{kind.__qualname__}", str(error), where)

    def error(self) -> UserError:
        """The error again, of its own class (plain :class:`UserError` when the class cannot
        be imported here or is not built from one message)."""
        module, _, name = self.type.rpartition(".")
        try:
            kind = getattr(importlib.import_module(module), name)
            error = kind(self.message) if isinstance(kind, type) and issubclass(kind, UserError) else None
        except Exception:  # not importable here, or another constructor
            error = None
        if error is None:
            error = UserError(self.message)
        error.where = self.where
        return error

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ErrorRecord:
        """The record ``to_json`` wrote (ValueError or KeyError when ``text`` is not one)."""
        fields = json.loads(text)
        return cls(str(fields["type"]), str(fields["message"]), str(fields.get("where", "")))
