"""Command-line plumbing: flags generated from the config's fields, one-line errors with a
suggestion for a mistyped flag, and the exit status of each outcome.

Imports nothing heavy (no torch): `--help` and a bad flag answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from fastcifar.errors import ConfigError, RunFolderError, RunStopped, UserError, first_line
from fastcifar.records.config_checks import MAX_SEED
from fastcifar.records.config_file import suggestion
from fastcifar.system.caller import called_from_command_line


class Parser(argparse.ArgumentParser):
    """No abbreviated flags (`--epoch` must not become `--epochs`), and one-line errors that
    suggest the flag that was probably meant."""

    def __init__(self, **options: Any) -> None:
        super().__init__(allow_abbrev=False, **options)

    def error(self, message: str) -> None:  # type: ignore[override]
        from fastcifar.system.distributed import environment_ranks

        if environment_ranks()[0] != 0:  # every torchrun rank parses the same flags: one says it
            self.exit(2)
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flags = [s for action in self._actions for s in action.option_strings]
            message += suggestion(unknown.group(1).split("=")[0], flags)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(text: str, kind: type, name: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}") from None


def count(text: str) -> int:
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def pixels(text: str) -> int:
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def seed(text: str) -> int:
    value = _number(text, int, "an integer")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text}")
    return value


def positive(text: str) -> float:
    value = _number(text, float, "a number")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def non_negative(text: str) -> float:
    value = _number(text, float, "a number")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    return _number(text, float, "a number")  # its range is checked with the config


def learning_rates(text: str) -> float | tuple[float, ...]:
    """One LR, or several separated by commas (an LR sweep)."""
    values = tuple(positive(part.strip()) for part in text.split(","))
    return values[0] if len(values) == 1 else values


DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def duration(text: str) -> float:
    """Seconds from "90", "90s", "15m", "1h30m" or "1:30:00"."""
    text = text.strip().lower()
    if ":" in text:
        parts = text.split(":")
        if len(parts) <= 3 and all(p.replace(".", "", 1).isdigit() for p in parts):
            return _positive_seconds(sum(float(p) * 60**i for i, p in enumerate(reversed(parts))))
    match = DURATION.fullmatch(text)
    if text and match and any(match.groups()):
        hours, minutes, seconds = (float(g or 0) for g in match.groups())
        return _positive_seconds(3600 * hours + 60 * minutes + seconds)
    raise argparse.ArgumentTypeError(
        f"must be a duration such as 90s, 15m, 2h or 1:30:00, got {text!r}"
    )


def _positive_seconds(value: float) -> float:
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a duration longer than zero")
    return value


PARSERS: dict[str, Callable[[str], Any]] = {
    "count": count,
    "pixels": pixels,
    "seed": seed,
    "positive": positive,
    "non_negative": non_negative,
    "fraction": fraction,
    "learning_rate": positive,
    "learning_rates": learning_rates,
    "duration": duration,
}


def add_saved_run_arguments(
    parser: argparse.ArgumentParser, uses: str, data_dir: bool = True
) -> None:
    """RUN_DIR, --data-dir (the run's own by default), --device and --allow-incomplete: what
    the commands that read a trained run (evaluate, predict, explain) share. `uses`: what the
    command does with an unfinished run's checkpoint."""
    parser.add_argument("run_dir", help="run folder written by fastcifar.train")
    if data_dir:
        parser.add_argument(
            "--data-dir",
            default=None,
            help="folder holding cifar-10-batches-bin/ (default: the run's own)",
        )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present, else cpu)"
    )
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help=f"{uses} an unfinished run's last checkpoint",
    )


def add_fields(
    parser: argparse.ArgumentParser,
    record: type,
    *,
    only: Iterable[str] | None = None,
    find_lr: bool = False,
) -> None:
    """A flag per field of the dataclass `record` (grouped as its metadata says), with no
    default of argparse's own: what was not given is absent, and the dataclass's default
    applies (which the help shows)."""
    # Groups by title, the parser's own included: two records may share one (runs).
    groups = {group.title: group for group in parser._action_groups}
    wanted = set(only) if only is not None else None
    for item in fields(record):
        meta = item.metadata
        if (wanted is not None and item.name not in wanted) or (
            find_lr and not meta.get("find_lr", True)
        ):
            continue
        group = groups.get(meta["group"]) or parser.add_argument_group(meta["group"])
        groups[meta["group"]] = group
        flags = [f"--{item.name.replace('_', '-')}", *meta.get("aliases", ())]
        options: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS}
        if str(item.type).startswith("bool"):
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = PARSERS[meta["parse"]] if "parse" in meta else str
            for key in ("choices", "metavar"):
                if key in meta:
                    options[key] = meta[key]
        shown = "" if item.default is None else f" (default: {_shown(item.default)})"
        group.add_argument(*flags, help=meta["help"] + shown, **options)
        if "off" in meta:  # a flag of its own for one value: --no-flip for --flip none
            off_flag, value = meta["off"]
            # None is "not used", which only this flag can say (over a recipe's or a file's).
            said = f"no {flags[0][2:]} (the default; over a recipe or a config file that sets it)"
            if value is not None:
                said = f"the same as {flags[0]} {value}"
            group.add_argument(off_flag, dest=item.name, action="store_const", const=value,
                               default=argparse.SUPPRESS, help=said)  # fmt: skip


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def given(args: argparse.Namespace, record: type) -> dict[str, Any]:
    """The flags of `args` that were given and belong to the dataclass `record`."""
    names = {item.name for item in fields(record)}
    return {key: value for key, value in vars(args).items() if key in names}


def flag_names(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The flags (as typed) behind the values in `args`."""
    by_dest = {
        action.dest: action.option_strings[0] for action in parser._actions if action.option_strings
    }
    return sorted(by_dest[name] for name in vars(args) if name in by_dest)


def run_main(main: Callable[[], object]) -> None:
    """Run a command's main; what a user can cause or fix becomes one line on stderr.

    Under torchrun every rank meets the same config error, folder refusal or stop, and only
    rank 0 says it; another error may be a node's own (a missing data file or extra on one
    machine), so the first rank of each node says it, the other nodes' with their rank."""
    from fastcifar.system.distributed import environment_ranks

    rank, local_rank = environment_ranks()
    try:
        with called_from_command_line():
            main()
    except (ConfigError, RunFolderError, RunStopped) as error:
        code = error.exit_code if isinstance(error, RunStopped) else 2
        line = str(error) if isinstance(error, RunStopped) else f"error: {error}"
        _fail(line if rank == 0 else None, code)
    except UserError as error:
        _fail(_node_line(f"error: {error}", rank, local_rank), 2)
    except KeyboardInterrupt:
        _fail("interrupted" if rank == 0 else None, 130)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        _fail(_node_line(f"error: {where}{error.strerror or error}", rank, local_rank), 2)
    except RuntimeError as error:
        from fastcifar.system.distributed import peer_lost

        if not peer_lost(error):
            raise
        # Exit at once (status 1): torchrun then restarts every rank, if --max-restarts allows.
        _fail(f"rank {rank}: a peer rank is gone ({_first_line(error)}); this rank stops too", 1)


def _first_line(error: BaseException) -> str:
    return (first_line(error) or type(error).__name__)[:200]


def _node_line(line: str, rank: int, local_rank: int) -> str | None:
    if rank == 0:
        return line
    return f"rank {rank}: {line}" if local_rank == 0 else None


def _fail(line: str | None, code: int) -> None:
    if line is not None:
        print(line, file=sys.stderr, flush=True)
    sys.exit(code)
