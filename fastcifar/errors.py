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


class DataError(UserError, ValueError):
    """Data of one's own (arrays, tensors) that cannot be trained on as given."""


class MissingBackendError(UserError, RuntimeError):
    """An optional extra (FFCV, DALI, TensorBoard, grad-cam) is not installed or cannot load."""


class RunFolderError(UserError):
    """A run folder that cannot be used as asked: occupied, unfinished, or not a run at all."""


class CheckpointError(UserError):
    """A model or checkpoint file that cannot be read, or does not fit this model."""


class DiskFullError(UserError):
    """The disk filled up while a run wrote a file: the message names it and the resume."""


class ImageInputError(UserError, ValueError):
    """An input image that cannot be read or is too large."""


class BetonError(UserError, ValueError):
    """A beton that is incomplete or does not hold the expected split; the message says which."""


class RunStopped(Exception):  # noqa: N818 (an outcome, not an error)
    """A run that ended early on purpose; the CLI prints the message and exits with the code.

    The message is a headline ("interrupted by SIGTERM after epoch 3") and a hint saying what
    to do next, which whoever knows better (a multi-run, say) may replace."""

    def __init__(self, headline: str, exit_code: int, hint: str = "") -> None:
        super().__init__(headline + hint)
        self.headline, self.exit_code = headline, exit_code

    def with_hint(self, hint: str) -> RunStopped:
        return type(self)(self.headline, self.exit_code, hint)


class Interrupted(RunStopped):
    """SIGINT (exit 130) or SIGTERM (exit 143): a checkpoint was saved where there was one."""


class Diverged(RunStopped):
    """A loss, a weight, a buffer or an optimizer state stopped being finite (exit 3); the last
    good checkpoint is kept."""

    def __init__(self, headline: str, exit_code: int = 3, hint: str = "") -> None:
        super().__init__(headline, exit_code, hint)


class LimitReached(RunStopped):
    """--max-time or --max-steps ended the run cleanly (exit 0): checkpointed, resumable."""

    def __init__(self, headline: str, exit_code: int = 0, hint: str = "") -> None:
        super().__init__(headline, exit_code, hint)


class RangeTestError(UserError):
    """The LR range test could not read bounds off its curve (e.g. it diverged at once)."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, as a one-line message quotes it ('' if empty)."""
    return (str(error).strip().splitlines() or [""])[0]
