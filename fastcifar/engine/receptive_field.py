"""The layer table of a model: each layer's output size, parameters, receptive field and jump,
computed from the modules themselves (nothing typed in), for the ResNet9 and for any model that
torch.fx can trace.

For a unit of a layer's output: the receptive field is how many input pixels (per axis) can
change it, the jump how many input pixels lie between two neighbouring units, the start where
the first unit's field is centred. A convolution or pooling of kernel k, stride s, padding p
and dilation d maps (r, j, c) to (r + (k - 1) d j, j s, c + ((k - 1) d / 2 - p) j); an
element-wise op (BatchNorm, ReLU, a residual sum) keeps the widest field of its inputs; a layer
that mixes every position (Linear over a flattened map) sees the field of the whole map.
See Araujo, Norris and Sim, "Computing receptive fields of convolutional neural networks",
Distill 2019.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from fastcifar.engine.model import parameter_count
from fastcifar.errors import ConfigError

WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Geometry:
    receptive_field: int
    jump: int
    start: float

    def windowed(self, kernel: int, stride: int, padding: int, dilation: int) -> Geometry:
        return Geometry(
            self.receptive_field + (kernel - 1) * dilation * self.jump,
            self.jump * stride,
            self.start + ((kernel - 1) * dilation / 2 - padding) * self.jump,
        )

    def whole_map(self, size: int) -> Geometry:
        """A unit that mixes a `size` x `size` map of units of this geometry."""
        return Geometry(
            self.receptive_field + (size - 1) * self.jump,
            self.jump * size,
            self.start + (size - 1) * self.jump / 2,
        )


@dataclass(frozen=True)
class LayerRow:
    name: str  # the module path
    output_shape: tuple[int, ...]  # without the batch
    parameters: int  # owned by this module
    geometry: Geometry


def trace(model: nn.Module, image_size: int = 32) -> tuple[fx.GraphModule, dict[str, Geometry]]:
    """The traced model with output shapes, and each node's geometry."""
    try:
        graph = fx.symbolic_trace(model)
    except Exception as error:  # whatever keeps fx from following a model of one's own
        raise ConfigError(
            f"receptive fields need a model torch.fx can trace ({type(error).__name__}: {error})"
        ) from None
    was_training = model.training
    with torch.no_grad():
        ShapeProp(graph.eval()).propagate(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    geometry: dict[str, Geometry] = {}
    for node in graph.graph.nodes:
        found = _node_geometry(graph, node, geometry)
        if found is not None:
            geometry[node.name] = found
    return graph, geometry


def _node_geometry(
    graph: fx.GraphModule, node: fx.Node, known: dict[str, Geometry]
) -> Geometry | None:
    if node.op == "placeholder":
        return Geometry(1, 1, 0.5)
    inputs = [known[arg.name] for arg in node.all_input_nodes if arg.name in known]
    if not inputs or node.op == "output":
        return None
    widest = max(inputs, key=lambda g: g.receptive_field)
    source = next(arg for arg in node.all_input_nodes if arg.name in known)
    if node.op == "call_module":
        module = graph.get_submodule(str(node.target))
        if isinstance(module, WINDOWED):
            names = ("kernel_size", "stride", "padding", "dilation")
            return widest.windowed(*(_square(getattr(module, n, 1), n, node) for n in names))
        if isinstance(module, nn.Linear | nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            return widest.whole_map(_map_size(source))
    if node.op == "call_function" and node.target in WINDOWED_FUNCTIONS:
        return widest.windowed(*_window_of(node))
    if (node.op == "call_function" and node.target in WHOLE_MAP_FUNCTIONS) or (
        node.op == "call_method" and node.target == "mean"
    ):
        return widest.whole_map(_map_size(source))
    if _resizes(node, source):  # an op that changes the map by rules not written here
        name = getattr(node.target, "__name__", str(node.target))
        raise ConfigError(
            f"receptive fields cannot follow {name} ({node.name}), which changes the map's side "
            f"from {_map_size(source)}: use convolution and pooling layers"
        )
    return widest  # element-wise, or a reshaping that keeps each unit's field


# The functional forms of the windowed layers, with where their arguments stand:
# (kernel, stride, padding, dilation) as (position, keyword, default).
WINDOWED_FUNCTIONS: dict[object, tuple[tuple[int, str, object], ...]] = {
    F.max_pool2d: ((1, "kernel_size", None), (2, "stride", None), (3, "padding", 0),
                   (4, "dilation", 1)),
    F.avg_pool2d: ((1, "kernel_size", None), (2, "stride", None), (3, "padding", 0),
                   (-1, "", 1)),
    F.conv2d: ((1, "weight", None), (3, "stride", 1), (4, "padding", 0), (5, "dilation", 1)),
}  # fmt: skip
WHOLE_MAP_FUNCTIONS = {F.linear, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.mean}


def _window_of(node: fx.Node) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) of a functional convolution or pooling."""
    values = []
    for position, keyword, default in WINDOWED_FUNCTIONS[node.target]:
        value = node.args[position] if 0 <= position < len(node.args) else default
        value = node.kwargs.get(keyword, value) if keyword else value
        if isinstance(value, fx.Node):  # a convolution's weight: its kernel is its last side
            value = tuple(value.meta["tensor_meta"].shape)[-1]
        values.append(value)
    kernel, stride, padding, dilation = values
    stride = kernel if stride is None else stride  # pooling's default stride is its kernel
    if padding == "same":
        padding = (_square(kernel, "kernel", node) - 1) * _square(dilation, "dilation", node) // 2
    padding = 0 if padding == "valid" else padding
    return tuple(_square(v, name, node) for v, name in  # type: ignore[return-value]
                 zip((kernel, stride, padding, dilation),
                     ("kernel", "stride", "padding", "dilation"), strict=True))  # fmt: skip


def _resizes(node: fx.Node, source: fx.Node) -> bool:
    shape = tuple(node.meta.get("tensor_meta").shape) if "tensor_meta" in node.meta else ()
    return len(shape) == 4 and shape[-1] != _map_size(source)


def _square(value: object, name: str, node: fx.Node) -> int:
    values = value if isinstance(value, tuple) else (value, value)
    if isinstance(values[0], str) or values[0] != values[-1]:
        raise ConfigError(f"{node.target}: a non-square {name} ({value}) has two receptive fields")
    return int(values[0])


def _map_size(node: fx.Node) -> int:
    """The side of the square map a node outputs (1 for a flattened or 1x1 one)."""
    shape = tuple(node.meta["tensor_meta"].shape)
    return shape[-1] if len(shape) == 4 else 1


def layer_rows(model: nn.Module, paths: list[str] | None = None) -> list[LayerRow]:
    """A row per module path (default: the model's top-level children), for the output of
    that module: its last node in the trace."""
    graph, geometry = trace(model)
    modules = dict(model.named_modules())
    paths = paths or [name for name, _ in model.named_children()]
    last: dict[str, fx.Node] = {}
    for node in graph.graph.nodes:
        for path in node.meta.get("nn_module_stack", {}):
            last[path] = node
        if node.op == "call_module":
            last[str(node.target)] = node
    rows = []
    for path in paths:
        if path not in last:
            raise ConfigError(f"{path} is not a module the model's forward uses")
        node = last[path]
        shape = tuple(node.meta["tensor_meta"].shape[1:])
        owned = parameter_count(modules[path])
        rows.append(LayerRow(path, shape, owned, geometry[node.name]))
    return rows
