"""`python -m fastcifar.summary [RUN_DIR] [--model NAME] [--width CHANNELS]`: the layer table
(layer, output shape, parameters), with each layer's receptive field and jump in input pixels,
computed from the modules (fastcifar.engine.receptive_field): of a named network (the recipe's
ResNet-9 by default, or airbench's; at another width), or of a trained run's model (its classes,
its width, its logit scale). A run of a model of one's own is read from Python:
fastcifar.summary.layer_table(fastcifar.load_run(RUN_DIR, model=...).model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastcifar.cli import Parser, count, run_main
from fastcifar.engine import NETWORK_NAMES
from fastcifar.records.config_checks import MAX_WIDTH

if TYPE_CHECKING:
    from torch import nn

# The rows of the seed's table, as (label, module path inside ResNet9).
TABLE_ROWS = (
    ("PrepLayer", "prep"),
    ("Layer1: X", "layer1.0"),
    ("Layer1: R1", "layer1.1.block"),
    ("Layer1: X + R1", "layer1.1"),
    ("Layer2", "layer2"),
    ("Layer3: X", "layer3.0"),
    ("Layer3: R2", "layer3.1.block"),
    ("Layer3: X + R2", "layer3.1"),
    ("MaxPool(4)", "pool"),
    ("FC", "fc"),
)
# The same for airbench's network (engine/airbench_net.py).
AIRBENCH_ROWS = (
    ("Whitening 2x2", "whiten"),
    ("GELU", "act"),
    ("Group 1", "groups.0"),
    ("Group 2", "groups.1"),
    ("Group 3", "groups.2"),
    ("MaxPool(3)", "pool"),
    ("FC", "fc"),
)
Row = tuple[str, tuple[int, ...], int, int, int]  # label, shape, parameters, field, jump


def layer_table(model: nn.Module | None = None) -> list[Row]:
    """A row per layer of the seed's table (the ResNet9; airbench's network likewise), or per
    top-level child of another model: (label, output shape without batch, parameters owned by
    the row, receptive field, jump)."""
    from fastcifar.engine.airbench_net import AirbenchNet
    from fastcifar.engine.model import ResNet9
    from fastcifar.engine.receptive_field import layer_rows

    model = model if model is not None else ResNet9()
    known = {ResNet9: TABLE_ROWS, AirbenchNet: AIRBENCH_ROWS}
    labelled = next((rows for kind, rows in known.items() if isinstance(model, kind)), None)
    paths = [path for _, path in labelled] if labelled else None
    rows = layer_rows(model, paths)
    labels = [label for label, _ in labelled] if labelled else [row.name for row in rows]
    # "X + R" rows add no parameters of their own: the block's are counted on the "R" row.
    return [
        (
            label,
            row.output_shape,
            0 if "+" in label else row.parameters,
            row.geometry.receptive_field,
            row.geometry.jump,
        )
        for label, row in zip(labels, rows, strict=True)
    ]


def format_table(rows: list[Row], total: int, logit_scale: float | None = None) -> str:
    """The layer table; the softmax has as many outputs as the last layer, and takes the
    logits times `logit_scale` where the model scales them (the ResNet9: 0.125)."""
    classes = " x ".join(map(str, rows[-1][1])) if rows else "?"
    head = f"{'Layer':<18}{'Output shape':<16}{'Params':>12}{'Field':>8}{'Jump':>6}"
    lines = [head, "-" * len(head)]
    for label, shape, params, field, jump in rows:
        shown = " x ".join(map(str, shape))
        lines.append(f"{label:<18}{shown:<16}{params:>12,}{field:>8}{jump:>6}")
    lines.append("-" * len(head))
    if logit_scale is not None and logit_scale != 1:
        lines.append(f"{f'Logits x {logit_scale:g}':<18}{classes:<16}{0:>12,}")
    lines += [
        f"{'Softmax':<18}{classes:<16}{0:>12,}",
        f"{'Total':<34}{total:>12,}",
        "Field: input pixels (per side) one unit of the layer sees; Jump: input pixels between "
        "two neighbouring units.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m fastcifar.summary", description=__doc__)
    parser.add_argument("run_dir", nargs="?", help="a run folder: its model's table (default: "
                        "the network --model names)")  # fmt: skip
    parser.add_argument("--model", choices=NETWORK_NAMES,
                        help="the named network to describe (default: resnet9)")  # fmt: skip
    parser.add_argument("--width", type=count, metavar="CHANNELS",
                        help="its first block's channels (default: 64, the recipe's)")  # fmt: skip
    args = parser.parse_args(argv)
    if (args.model or args.width) and args.run_dir:
        parser.error("a run folder's table is its own model's: give RUN_DIR or --model/--width")
    if args.width and args.width > MAX_WIDTH:
        parser.error(f"argument --width: must be at most {MAX_WIDTH}, got {args.width}")

    def run() -> None:
        from fastcifar.engine.model import network_class, parameter_count

        if args.run_dir is None:
            kind = network_class(args.model or "resnet9")
            model = kind(width=args.width or 64)  # with its own logit scale
        else:
            from pathlib import Path

            from fastcifar.runs.saved_run import load_saved_run
            from fastcifar.system.device import pick_device

            saved = load_saved_run(Path(args.run_dir), pick_device(None), allow_incomplete=True)
            model = saved.model
        scale = getattr(model, "logit_scale", None)
        print(format_table(layer_table(model), parameter_count(model), scale))

    run_main(run)


if __name__ == "__main__":
    main()
