"""torch.compile for this engine, and the counters that prove nothing compiles twice.

Shapes are static (training drops its last partial batch, evaluation pads its last one), so
after the warm-up neither Dynamo nor CUDA graphs may record anything again. Dynamo's frame
counter misses a CUDA-graph re-recording, which is just as slow, so both are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """`torch.compile` with a fixed shape per call site, so no epoch ever recompiles.

    `dynamic=False` keeps the training batch and the evaluation batch as two static graphs,
    compiled once each, instead of one dynamic-shape graph that is slower per step.
    """
    return torch.compile(model, mode=mode, dynamic=False)


@dataclass(frozen=True)
class CompileCounts:
    """Counts of this process so far. They read torch's private counters and CUDA-graph trees:
    a count this torch no longer exposes is None (unknown), never a made-up 0. The CUDA-graph
    count is of the trees alive now: read it while the compiled modules exist."""

    dynamo_frames: int | None  # frames Dynamo compiled
    cuda_graphs: int | None  # CUDA graphs recorded by cudagraph trees (mode reduce-overhead)
    cuda_graph_skips: int | None  # graphs that could not be captured and ran without CUDA graphs

    def __sub__(self, earlier: CompileCounts) -> CompileCounts:
        def less(now: int | None, then: int | None) -> int | None:
            return None if now is None or then is None else now - then

        return CompileCounts(
            less(self.dynamo_frames, earlier.dynamo_frames),
            less(self.cuda_graphs, earlier.cuda_graphs),
            less(self.cuda_graph_skips, earlier.cuda_graph_skips),
        )

    def to_dict(self) -> dict[str, int | None]:
        return dict(self.__dict__)


def compile_counts() -> CompileCounts:
    try:
        from torch._dynamo.utils import counters

        frames = int(counters["frames"]["ok"])
        skips = int(counters["inductor"]["cudagraph_skips"])
    except (ImportError, AttributeError, KeyError, TypeError):
        frames = skips = None
    return CompileCounts(frames, _recorded_cuda_graphs(), skips)


def _recorded_cuda_graphs() -> int | None:
    """Nodes of every device's CUDA-graph tree: one per recording (re-recordings included)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    try:
        return _tree_nodes()
    except (ImportError, AttributeError, TypeError):  # private torch internals moved
        return None


def _tree_nodes() -> int:
    from torch._inductor import cudagraph_trees

    total = 0
    for index in range(torch.cuda.device_count()):
        manager = cudagraph_trees.get_manager(index, create_if_none_exists=False)
        if manager is None or manager.roots is None:
            continue
        pending = [node for nodes in manager.roots.values() for node in nodes]
        while pending:
            node = pending.pop()
            total += 1
            pending.extend(child for children in node.children.values() for child in children)
    return total
