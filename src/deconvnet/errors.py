"""Errors caused by the user's input (files, data, configs, checkpoints).

The CLI prints them as one clear message and exits with status 2, without a
traceback: the message itself must say what is wrong and how to fix it.
"""


class UserError(Exception):
    """Bad input the user can fix; the message names the file or key and the fix."""


class DataError(UserError, ValueError):
    """A dataset file or folder that is missing, corrupt or inconsistent."""


class WeightsError(UserError, ValueError):
    """A weights file or state dict that does not fit the network."""
