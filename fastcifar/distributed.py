"""Everything about ranks, in one place: torchrun's environment, the process group, collectives.

A single process with no torchrun environment gets a `Distributed` of world size 1 whose
collectives are no-ops, so the training loop never asks how many processes there are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastcifar.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: a single process, no process group
    # A gloo group for yes/no votes with CPU tensors: under NCCL, a vote on a CUDA tensor
    # would make the host wait for the GPU. None: the default group (gloo already).
    vote_group: object = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (and returned); the identity in a single process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (all of the same shape), in rank order."""
        if not self.enabled:
            return [tensor]
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor.contiguous())
        return gathered

    def broadcast_object(self, value: object) -> object:
        """Rank 0's `value` on every rank."""
        if not self.enabled:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather_objects(self, value: object) -> list[object]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def first_rank_first(self, work):
        """`work()` on rank 0, then on the other ranks: e.g. a download that all ranks need."""
        if self.enabled and not self.is_main:
            dist.barrier()
        result = work()
        if self.enabled and self.is_main:
            dist.barrier()
        return result

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank (a collective: all must call).
        It waits for the other ranks' hosts, never for a GPU."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=self.vote_group)
        return bool(value.item())

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank: after a training step each
        rank has updated them from its own samples."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def from_environment() -> tuple[int, int, int]:
    """(rank, local rank, world size) as torchrun sets them; (0, 0, 1) without torchrun."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers (set by torchrun)"
        ) from None
    return rank, local, world


def setup(device: torch.device) -> Distributed:
    """Join torchrun's process group when there is one: NCCL on CUDA, gloo on CPU."""
    rank, local_rank, world = from_environment()
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    backend = dist.get_backend()
    votes = dist.new_group(backend="gloo") if backend != "gloo" else None
    return Distributed(rank, local_rank, world, backend, votes)


def local_device_name(requested: str | None) -> str | None:
    """Under torchrun each rank takes the GPU of its LOCAL_RANK; a single process keeps its flag."""
    _, local_rank, world = from_environment()
    if world <= 1:
        return requested
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if requested != "cuda":
            raise ConfigError(
                "under torchrun each rank takes the GPU of its LOCAL_RANK: use --device cuda"
            )
        return f"cuda:{local_rank}"
    return requested


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
