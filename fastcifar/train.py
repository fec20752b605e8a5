"""`python -m fastcifar.train`: train the custom ResNet on CIFAR-10 with the One Cycle recipe.

LRMIN and LRMAX are found by an LR range test unless --lr-max (and optionally --lr-min) are
given. Writes a run folder: config.json, metrics.csv, summary.json (with the run's status),
model.pt, lr_range_test.{json,png}, lr_schedule.png, curves.png, misclassified.png,
confusion_matrix.png; checkpoint.pt while the run is unfinished.

Several runs: --seeds N trains seeds S..S+N-1 (S = --seed), compiled once, and writes their
mean ± std; --lr-max 0.1,0.2,0.4 sweeps LRMAX (each with --seeds N). Under torchrun every rank
runs this command unchanged (see --parallel). Settings can come from a TOML file (--config);
--print-config prints the resolved settings in that form. The same from Python: fastcifar.fit.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastcifar.cli import Parser, add_fields, flag_names, given, run_main
from fastcifar.records.config import RunOptions, TrainConfig
from fastcifar.records.config_file import read_toml, to_toml


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m fastcifar.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_argument_group("this command")
    commands.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="settings from a TOML file (as --print-config writes it); flags override it",
    )
    commands.add_argument(
        "--print-config",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the resolved settings as TOML (give them back with --config) and exit",
    )
    commands.add_argument(
        "--estimate",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print what the run would cost on this machine (one measured step) and exit",
    )
    add_fields(parser, TrainConfig)
    add_fields(parser, RunOptions)
    return parser


def main(argv: list[str] | None = None, *, data: Any = None, model: Any = None) -> None:
    """The command; `data` and `model` as fastcifar.fit takes them (for embedding and tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> None:
        settings, options = given(args, TrainConfig), given(args, RunOptions)
        if options.get("resume") is not None:
            _refuse_settings_beside_resume(args, parser)
        base = read_toml(args.config) if "config" in args else {}
        if "print_config" in args:
            print(
                to_toml(resolved(TrainConfig.from_dict({**base, **settings}, "the settings"))),
                end="",
            )
            return
        from fastcifar import api

        if "estimate" in args:
            cost = api.cost_of(api.make_request({**base, **settings}, data, model, **options))
            print(cost.line(), flush=True)
            return
        # Not api.fit: a stop here says the command to paste, not the Python call.
        api.execute(api.make_request({**base, **settings}, data, model, **options))

    run_main(run)


def resolved(config: TrainConfig) -> TrainConfig:
    """The config as a file keeps it: a data folder given made absolute (the file works from
    any folder); none given stays unset, so that where the file is read $FASTCIFAR_DATA or that
    machine's cache applies, not the folder this machine would have used."""
    from dataclasses import replace

    from fastcifar.data.source import recorded_data_dir

    if config.data_dir is None:
        return config
    return replace(config, data_dir=recorded_data_dir(config.data_dir))


def _refuse_settings_beside_resume(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> None:
    from fastcifar.runs.resume import BESIDE_RESUME, refuse_beside_resume

    extra = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in BESIDE_RESUME})
    others = flag_names(extra, parser)
    refuse_beside_resume(others, "--resume")


if __name__ == "__main__":
    main()
