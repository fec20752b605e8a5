"""`python -m fastcifar.summary`: the model's layer table (layer, output shape, parameters), in
the form the assignment gives it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastcifar.cli import Parser

if TYPE_CHECKING:
    from torch import nn

    from fastcifar.model import ResNet9

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


def layer_table(model: ResNet9 | None = None) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer, output shape without batch, parameters owned by that row) for each table row."""
    import torch

    from fastcifar.model import ResNet9

    model = model or ResNet9()
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[path].register_forward_hook(
            lambda _m, _i, out, label=label: shapes.__setitem__(label, tuple(out.shape[1:]))
        )
        for label, path in TABLE_ROWS
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 32, 32))
    finally:
        for hook in hooks:
            hook.remove()
    return [(label, shapes[label], _own_params(modules[path], label)) for label, path in TABLE_ROWS]


def _own_params(module: nn.Module, label: str) -> int:
    from fastcifar.model import parameter_count

    # "X + R" rows add no parameters of their own: the block's are counted on the "R" row.
    return 0 if "+" in label else parameter_count(module)


def format_table(rows: list[tuple[str, tuple[int, ...], int]], total: int) -> str:
    lines = [f"{'Layer':<18}{'Output shape':<18}{'Params':>12}", "-" * 48]
    for label, shape, params in rows:
        lines.append(f"{label:<18}{' x '.join(map(str, shape)):<18}{params:>12,}")
    lines += ["-" * 48, f"{'Softmax':<18}{'10':<18}{0:>12,}", f"{'Total':<36}{total:>12,}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    Parser(prog="python -m fastcifar.summary", description=__doc__).parse_args(argv)
    from fastcifar.model import ResNet9, parameter_count

    model = ResNet9()
    print(format_table(layer_table(model), parameter_count(model)))


if __name__ == "__main__":
    main()
