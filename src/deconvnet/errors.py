"""Errors caused by the user's input (files, data, configs, checkpoints).

The CLI prints them as one clear message and exits with status 2, without a
traceback: the message itself must say what is wrong and how to fix it.

Raised in another process, such an error reaches the caller wrapped: PyTorch's DataLoader
re-raises a worker's exception as the same type built from "Caught X in DataLoader worker
process N. Original Traceback ..." (unwrapped by :class:`UserError` itself), and a
``ddp_spawn`` rank's exception arrives as a ``ProcessRaisedException`` holding the rank's
traceback text (:func:`from_other_process`). Both keep the original message as the last
line of a standard Python traceback, ``<module>.<Class>: <message>``.
"""

from __future__ import annotations

import importlib
import re

# The last line of a formatted traceback: "package.module.ClassName: message"
_TRACEBACK_LAST_LINE = re.compile(r"^(?P<module>[\w.]+)\.(?P<cls>\w+): (?P<msg>.*)$", re.M)


class UserError(Exception):
    """Bad input the user can fix; the message names the file or key and the fix.

    Built from a DataLoader worker's wrapped traceback (see the module doc), it keeps only
    the original message, and ``where`` says which worker raised it.
    """

    def __init__(self, *args: object) -> None:
        self.where = ""
        if len(args) == 1 and isinstance(args[0], str):
            unwrapped = _unwrap_dataloader_text(args[0], type(self))
            if unwrapped is not None:
                self.where, message = unwrapped
                args = (message,)
        super().__init__(*args)


def _unwrap_dataloader_text(text: str, cls: type) -> tuple[str, str] | None:
    """(where, original message) when ``text`` is torch's re-raise of a worker's ``cls``."""
    head = f"Caught {cls.__name__} "
    if not text.startswith(head) or "\nOriginal Traceback" not in text:
        return None
    where = text[len(head):text.index("\n")].rstrip(".")
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    start = text.rfind("\n" + prefix)
    if start < 0:
        return None
    return where, text[start + 1 + len(prefix):].strip()


def from_other_process(err: BaseException) -> UserError | None:
    """The UserError another process raised, when ``err`` carries its traceback as text (a
    ``ddp_spawn`` rank's ``ProcessRaisedException``); None for any other error."""
    if isinstance(err, UserError) or "Traceback" not in str(err):
        return None
    for match in reversed(list(_TRACEBACK_LAST_LINE.finditer(str(err)))):
        try:
            cls = getattr(importlib.import_module(match["module"]), match["cls"])
        except (ImportError, AttributeError, ValueError):
            continue
        if isinstance(cls, type) and issubclass(cls, UserError):
            try:
                return cls(match["msg"].strip())
            except Exception:  # a subclass with another constructor
                return UserError(match["msg"].strip())
        return None  # the process died of something else: keep the traceback
    return None


class DataError(UserError, ValueError):
    """A dataset file or folder that is missing, corrupt or inconsistent."""


class WeightsError(UserError, ValueError):
    """A weights file or state dict that does not fit the network."""
