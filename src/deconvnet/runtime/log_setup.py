"""Logging setup: what the package's modules log (``logging.getLogger(__name__)``) reaches the
user as plain lines on stderr; the CLI calls :func:`setup_logging` once."""

from __future__ import annotations

import logging
import sys

PACKAGE_LOGGER = "deconvnet"


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Send the ``deconvnet.*`` loggers' records at ``level`` and above to stderr as bare
    messages (warnings prefixed ``warning:``). Idempotent."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.setLevel(level)
    if not any(getattr(h, "_deconvnet", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        handler._deconvnet = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message
