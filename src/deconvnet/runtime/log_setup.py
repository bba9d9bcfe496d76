"""Logging setup: what the package's modules log (``logging.getLogger(__name__)``) reaches the
user as plain lines, information on stdout and warnings on stderr (``warning: ...``); the
CLI calls :func:`setup_logging` once."""

from __future__ import annotations

import logging
import sys

PACKAGE_LOGGER = "deconvnet"


class _CurrentStream(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is at the time of the record (tests
    and notebooks replace them after setup)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property
    def stream(self):
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Send the ``deconvnet.*`` loggers' records at ``level`` and above to the user: below
    WARNING on stdout, WARNING and above on stderr. Idempotent."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.setLevel(level)
    root = logging.getLogger()
    if not root.handlers:
        # a library's bare logging.warning() would otherwise install a root handler
        # (logging.basicConfig) that prints every record of ours a second time
        root.addHandler(logging.NullHandler())
    if not any(isinstance(h, _CurrentStream) for h in logger.handlers):
        info = _CurrentStream("stdout")
        info.addFilter(lambda record: record.levelno < logging.WARNING)
        warnings = _CurrentStream("stderr")
        warnings.setLevel(logging.WARNING)
        for handler in (info, warnings):
            handler.setFormatter(_Formatter())
            logger.addHandler(handler)
    return logger
