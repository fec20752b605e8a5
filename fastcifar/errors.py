"""Every failure a user can cause or fix, as one exception type each.

The command-line entry points (`fastcifar.cli.run_main`) print any `UserError` as one line and
exit with status 2; a new failure mode adds a type here, not a try/except in the middle of a loop.
This module imports nothing heavy, so that `--help` and argument errors stay fast.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message says what went wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message says which and why."""


class DataSourceError(UserError, RuntimeError):
    """A one-line, actionable problem with the CIFAR-10 files."""


class MissingBackendError(UserError, RuntimeError):
    """An optional extra (FFCV, DALI, TensorBoard, grad-cam) is not installed or cannot load."""


class RunFolderError(UserError):
    """A run folder that cannot be used as asked: occupied, unfinished, or not a run at all."""


class CheckpointError(UserError):
    """A model or checkpoint file that cannot be read, or does not fit this model."""


class ImageInputError(UserError, ValueError):
    """An input image that cannot be read or is too large."""


class BetonError(UserError, ValueError):
    """A beton that is incomplete or does not hold the expected split; the message says which."""
