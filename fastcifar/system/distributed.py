"""Everything about ranks, in one place: torchrun's environment, the process group, the DDP wrap
and its compile mode, collectives, stop votes, the silence of the other ranks, and how to launch
the same world again.

A single process with no torchrun environment gets a `Distributed` of world size 1 whose
collectives are no-ops, so the training loop never asks how many processes there are.
torch is imported inside the functions that need it: the command line asks which rank it is
on its error path, and flag errors must answer without loading torch.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fastcifar.errors import ConfigError, RunStopped, UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")

# Collectives that wait for other ranks' work (the LR range test of parallel runs on rank 0
# alone; the last runs of an uneven share, hours on a CPU) use this timeout. It only bounds a
# peer that hangs: a dead one is seen at once (its connection closes).
COORDINATION_TIMEOUT = datetime.timedelta(hours=24)
# Under DDP the ranks agree on a stop (a gloo vote) every this many steps on a GPU, and after
# every step on a CPU: they must all stop at the same step, or the next all-reduce would wait
# forever; and torchrun kills its workers 30 s after forwarding a signal.
GPU_STOP_CHECK_INTERVAL = 8


def _integer(name: str, default: str) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(
            f"{name} must be an integer (torchrun sets it), got {os.environ[name]!r}"
        ) from None


def from_environment() -> tuple[int, int, int]:
    """(rank, local rank, world size) as torchrun sets them; (0, 0, 1) without torchrun."""
    world = _integer("WORLD_SIZE", "1")
    rank = _integer("RANK", "0")
    return rank, _integer("LOCAL_RANK", str(rank)), world


def environment_ranks() -> tuple[int, int]:
    """(rank, local rank), never failing: for deciding who prints an error."""
    try:
        rank, local_rank, _ = from_environment()
    except ConfigError:
        return 0, 0
    return rank, local_rank


def restarted() -> bool:
    """True in the workers of a torchrun restart (`--max-restarts`)."""
    return _integer("TORCHELASTIC_RESTART_COUNT", "0") > 0


PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "remote process exited",
)


def peer_lost(error: BaseException) -> bool:
    """Whether `error` is a collective that failed because another rank died."""
    return any(text in str(error) for text in PEER_LOST)


def describe_error(error: BaseException) -> tuple[str, str, int]:
    """(class name, message, exit status) of a fastcifar error, to send to other ranks."""
    return type(error).__name__, str(error), getattr(error, "exit_code", 2)


def rebuild_error(name: str, text: str, code: int) -> BaseException:
    """The error `describe_error` described, raised on another rank."""
    import fastcifar.errors as errors

    kind = getattr(errors, name, errors.UserError)
    return kind(text, code) if issubclass(kind, RunStopped) else kind(text)


def launch_command(arguments: str, world_size: int | None = None) -> str:
    """`python -m ARGUMENTS` as it must be typed to run in this world again (or in one of
    `world_size` processes): the running interpreter, and for several processes torchrun's
    form (`python -m torch.distributed.run`, which works wherever torch does)."""
    python = shlex.quote(sys.executable)
    _, _, world = from_environment()
    if world_size is not None and world_size != world:
        world = world_size
        per_node = world_size  # on one machine: how they spread over machines is the user's
    else:
        per_node = _integer("LOCAL_WORLD_SIZE", str(world))
    if world <= 1:
        return f"{python} -m {arguments}"
    nodes = max(1, world // per_node)
    if nodes == 1:
        launcher = f"--standalone --nproc_per_node={per_node}"
    else:
        launcher = (
            f"--nnodes={nodes} --nproc_per_node={per_node} --rdzv-backend=c10d "
            "--rdzv-endpoint=HOST:PORT --rdzv-id=ID"
        )
    return f"{python} -m torch.distributed.run {launcher} -m {arguments}"


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: a single process, no process group
    # A gloo group for votes and objects (CPU tensors, long timeout): under NCCL, a vote on a
    # CUDA tensor would make the host wait for the GPU. None: the default group (gloo already).
    vote_group: Any = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (and returned); the identity in a single process."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (all of the same shape), in rank order."""
        if not self.enabled:
            return [tensor]
        import torch
        import torch.distributed as dist

        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor.contiguous())
        return gathered

    def broadcast_object(self, value: object) -> object:
        """Rank 0's `value` on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0, group=self.vote_group)
        return holder[0]

    def from_rank_0(self, work: Callable[[], T]) -> T:
        """`work()` on rank 0 alone, and its result on every rank; when it fails with an error
        a user can cause (or a stop), every rank raises it, so that none waits on in a
        collective that rank 0 has left."""
        if not self.enabled:
            return work()
        outcome: tuple = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", work())
            except (UserError, RunStopped) as error:
                self.broadcast_object(("error", *describe_error(error)))
                raise
        outcome = self.broadcast_object(outcome)
        if outcome[0] == "error":
            raise rebuild_error(*outcome[1:])
        return outcome[1]

    def gather_objects(self, value: object) -> list[object]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.vote_group)
        return gathered

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank (a collective: all must call).
        It waits for the other ranks' hosts, never for a GPU."""
        return self._largest(int(flag)) > 0

    def agree(self, code: int) -> int:
        """The largest of every rank's stop `code` (a collective: all must call), so that the
        ranks stop for one and the same reason. It waits for the other ranks' hosts, never for
        a GPU."""
        return self._largest(code)

    def _largest(self, value: int) -> int:
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.vote_group)
        return int(tensor.item())

    def stop_vote(self, code: int, steps_done: int, device: torch.device) -> int:
        """The agreed stop code (0: go on) after this step: a vote every step on a CPU, every
        GPU_STOP_CHECK_INTERVAL steps on a GPU; a single process just asks itself."""
        if not self.enabled:
            return code
        interval = 1 if device.type == "cpu" else GPU_STOP_CHECK_INTERVAL
        return 0 if steps_done % interval else self.agree(code)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank: after a training step each
        rank has updated them from its own samples."""
        if self.enabled:
            import torch.distributed as dist

            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def start(device_name: str | None, batch_size: int, data_parallel: bool) -> tuple[Any, Distributed]:
    """This process's device and place among torchrun's ranks (the process group joined), the
    other ranks silenced. `data_parallel`: one run's global batch is split over the ranks."""
    from fastcifar.system.device import pick_device
    from fastcifar.system.progress import silence

    _, _, world = from_environment()
    if data_parallel and batch_size % world:
        raise ConfigError(
            f"batch_size {batch_size} does not divide among {world} ranks: "
            "--batch-size is the global batch, split evenly"
        )
    device = pick_device(local_device_name(device_name))
    dist = setup(device)
    if not dist.is_main:
        silence()
    return device, dist


def setup(device: torch.device) -> Distributed:
    """Join torchrun's process group when there is one: NCCL on CUDA, gloo on CPU."""
    import torch.distributed as dist

    rank, local_rank, world = from_environment()
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        store = _attempt_store(rank, world)
        if device.type == "cuda":
            dist.init_process_group(
                "nccl", store=store, rank=rank, world_size=world, device_id=device
            )
        else:
            dist.init_process_group(
                "gloo", store=store, rank=rank, world_size=world, timeout=COORDINATION_TIMEOUT
            )
    backend = dist.get_backend()
    votes = (
        dist.new_group(backend="gloo", timeout=COORDINATION_TIMEOUT) if backend != "gloo" else None
    )
    return Distributed(rank, local_rank, world, backend, votes)


def _attempt_store(rank: int, world: int) -> Any:
    """torchrun's store, under a prefix of this attempt's own: after a restart the workers meet
    in the same store, where the first attempt's addresses are still written, and a worker that
    reads a dead one's address fails ("connectFullMesh ... Connection refused")."""
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=COORDINATION_TIMEOUT))
    attempt = _integer("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"fastcifar-attempt-{attempt}", store)


def local_device_name(requested: str | None) -> str | None:
    """Under torchrun each rank takes the GPU of its LOCAL_RANK, or the one GPU it sees when it
    is given one (srun style, CUDA_VISIBLE_DEVICES); a single process keeps its flag."""
    import torch

    rank, local_rank, world = from_environment()
    if world <= 1:
        return requested
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if not requested.startswith("cuda"):
        return requested
    if requested != "cuda":
        raise ConfigError(
            "under torchrun each rank takes the GPU of its LOCAL_RANK: use --device cuda"
        )
    visible = torch.cuda.device_count()
    if visible == 1:
        return "cuda:0"
    if local_rank >= visible:
        raise ConfigError(
            f"rank {rank} has LOCAL_RANK {local_rank} but sees {visible} GPU(s): start at most "
            "one process per GPU, or give each process one GPU (CUDA_VISIBLE_DEVICES)"
        )
    return f"cuda:{local_rank}"


def data_parallel_forward(forward: nn.Module, device: torch.device) -> nn.Module:
    """`forward` wrapped in DistributedDataParallel, without DDP's buffer broadcast before
    every forward (a collective per step): in training BatchNorm normalises with the batch's
    statistics; its running statistics serve only evaluation, which broadcasts rank 0's first,
    and the checkpoints, which rank 0 writes."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # Renamed in torch 2.14, whose old name warns (the GPU machines have torch 2.11).
    names = inspect.signature(DistributedDataParallel).parameters
    flag = "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(forward, device_ids=device_ids, **{flag: False})


def compile_mode_for(
    compile_asked: bool | None, mode: str | None, device: torch.device, dist: Distributed
) -> str | None:
    """The torch.compile mode to use, or None for eager.

    Compiling is on by default only with CUDA: on the 2-core development CPU it did not pay
    (BENCHMARKS.md). Under DDP the default is mode "default", the combination PyTorch
    documents (DDPOptimizer splits the graph at gradient buckets); CUDA graphs with NCCL
    collectives between them have not been measured here, so they are not the default."""
    use = compile_asked if compile_asked is not None else device.type == "cuda"
    if not use:
        return None
    if mode is not None:
        return mode
    return "default" if dist.enabled else "reduce-overhead"


@contextlib.contextmanager
def started(
    device_name: str | None, batch_size: int, data_parallel: bool
) -> Iterator[tuple[Any, Distributed]]:
    """`start`, then the process group left whatever happens: every flow's device and ranks."""
    try:
        yield start(device_name, batch_size, data_parallel)
    finally:
        teardown()


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
