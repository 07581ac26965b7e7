"""Several processes, one job: ``torchrun`` launches, `torch.distributed` communicates.

Two uses (see the README's "Past one process"):

- **Data-parallel training of one signal** (`set_data_parallel`): every rank holds the same model,
  trains on its own share of each step's batch, and averages gradients with the others
  (`average_gradients`). Batches are drawn from one random stream that every rank advances
  identically, each rank keeping its `shard` of the draw: the union of the ranks' batches is the
  batch one process would draw, so 2 ranks with half the batch train the same model as 1 rank with
  all of it, and a run resumes with any number of ranks. State updated from data (SAPE's error
  statistics, the occupancy grid, the INT teacher's picks) is reduced across ranks by its owner,
  which asks `data_parallel()` whether to.
- **Many signals** (`nfield.fit_many`): the ranks split the files between them and train
  independently; no collective runs during training, so this module's data-parallel state stays off.

`init_from_environment` reads torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
starts the process group: NCCL when the job runs on CUDA, gloo on the CPU. Without them (a plain
``nfield ...``) nothing is started and every function here is the single-process identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, TypeVar

import torch
import torch.distributed as dist

from nfield.errors import NfieldError

#: How long a collective may wait for the slowest rank (rank 0 evaluating, a rank fitting more files).
COLLECTIVE_TIMEOUT = timedelta(hours=6)

T = TypeVar("T")


@dataclass(frozen=True)
class Layout:
    """Where this process sits in the job: its rank among `world` processes, and its GPU index on
    its machine (`local_rank`)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_DATA_PARALLEL: Layout | None = None
_COORDINATION: Any = None  # a gloo group for host-side coordination (barriers, objects) when the default is NCCL


def environment_layout() -> Layout:
    """The layout torchrun's environment variables describe (rank 0 of 1 without them)."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        raise NfieldError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise NfieldError(f"RANK {rank} does not fit WORLD_SIZE {world}")
    return Layout(rank, world, local_rank)


def layout() -> Layout:
    """This process's place in the started process group (rank 0 of 1 when none is started)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Layout()
    return Layout(dist.get_rank(), dist.get_world_size(), environment_layout().local_rank)


def device_for(name: str, where: Layout) -> str:
    """The device a rank trains on: ``auto`` and ``cuda`` become ``cuda:<local rank>`` when CUDA is
    available, so each process of a machine takes its own GPU; anything else is kept."""
    if where.world > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{where.local_rank % torch.cuda.device_count()}"
    return name


def init_from_environment(device: str = "auto") -> Layout:
    """Start the process group torchrun's environment describes (once; later calls return it).

    Args:
        device: the command's ``--device``; CUDA (explicit, or ``auto`` on a machine with GPUs)
            selects NCCL, anything else gloo.

    Returns:
        This process's layout (rank 0 of 1, nothing started, outside torchrun).
    """
    global _COORDINATION
    where = environment_layout()
    if where.world == 1 or (dist.is_available() and dist.is_initialized()):
        return layout() if where.world > 1 else where
    if not dist.is_available():
        raise NfieldError("this PyTorch build has no torch.distributed; run in one process")
    chosen = device_for(device, where)
    on_cuda = chosen.startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(torch.device(chosen))
    try:
        dist.init_process_group("nccl" if on_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
        _COORDINATION = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if on_cuda else None
    except (RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NfieldError(f"could not start the process group (rank {where.rank} of {where.world}): {first}") from None
    return where


def set_data_parallel(enabled: bool) -> None:
    """Turn data-parallel training of one signal on (every rank trains the same model) or off."""
    global _DATA_PARALLEL
    _DATA_PARALLEL = layout() if enabled and layout().world > 1 else None


def data_parallel() -> Layout | None:
    """The layout when this process trains one model with other ranks, else None."""
    return _DATA_PARALLEL


def whole_step_batch(task_config: dict[str, Any], key: str, ranks: int) -> dict[str, Any]:
    """Make a new data-parallel run's task settings record the batch of a whole step: the flag's
    batch `task_config[key]` is one rank's, so it becomes that times `ranks` (each rank then draws
    the whole step's batch and keeps its `shard`, so the step is the single-process one). Returns
    config.json's ``data_parallel`` section, which says so."""
    per_rank = task_config[key]
    task_config[key] = per_rank * ranks
    return {"data_parallel": {"ranks": ranks, f"{key}_per_rank": per_rank}}


def writes_run_files() -> bool:
    """Whether this process writes its run directory: every process, except the ranks other than 0 of
    a data-parallel run (whose run is rank 0's)."""
    where = data_parallel()
    return where is None or where.is_main


def shard_bounds(n: int, where: Layout | None = None) -> tuple[int, int]:
    """[start, end) of this rank's contiguous block of n items, blocks differing by at most one."""
    where = where or data_parallel() or Layout()
    base, extra = divmod(n, where.world)
    start = where.rank * base + min(where.rank, extra)
    return start, start + base + (where.rank < extra)


def shard(x: T, where: Layout | None = None) -> T:
    """This rank's block of a tensor's first dimension (or of a list); everything when one process trains."""
    start, end = shard_bounds(len(x), where)
    return x[start:end]


def loss_share(n_local: int, n_global: int) -> float:
    """The factor on a rank's mean loss over its `n_local` of `n_global` samples that makes the ranks'
    averaged gradient the gradient of the mean over all of them (1 for equal shares)."""
    where = data_parallel()
    return 1.0 if where is None or n_global == 0 else where.world * n_local / n_global


def average_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Average the gradients of `parameters` over the data-parallel ranks, in one flat all-reduce.

    A parameter without a gradient on some rank counts as zero there; one without a gradient on every
    rank keeps None (so Adam leaves it, as one process would).
    """
    if data_parallel() is None:
        return
    params = list(parameters)
    if not params:
        return
    device = params[0].device
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(present)
    used = [p for p, n in zip(params, present.tolist()) if n > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not used:
        return
    flat = torch.cat([p.grad.reshape(-1).float() for p in used])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in used:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` in place over the data-parallel ranks (``sum``, ``mean`` or ``max``); unchanged
    when one process trains."""
    if data_parallel() is None:
        return tensor
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        tensor /= dist.get_world_size()
    return tensor


def all_gather_blocks(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every data-parallel rank's `local` block (first dimension, sizes may differ by
    rank) in rank order; `local` itself when one process trains."""
    if data_parallel() is None:
        return local
    world = dist.get_world_size()
    sizes = torch.tensor([len(local)], device=local.device)
    gathered_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(gathered_sizes, sizes)
    longest = int(max(s.item() for s in gathered_sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    blocks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(blocks, padded)
    return torch.cat([block[: int(n.item())] for block, n in zip(blocks, gathered_sizes)])


def barrier() -> None:
    """Wait for every rank (host-side; nothing when no process group is started)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_COORDINATION)


def main_first(make: Callable[[], T]) -> T | None:
    """Run `make` on rank 0 while the other ranks wait; rank 0's `NfieldError` is raised on every
    rank (so a refused ``--out`` stops the whole job with one message). Returns rank 0's result there,
    None elsewhere."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return make()
    result, message = None, [None]
    if dist.get_rank() == 0:
        try:
            result = make()
        except NfieldError as err:
            message = [str(err)]
    dist.broadcast_object_list(message, src=0, group=_COORDINATION)
    if message[0] is not None:
        if dist.get_rank() == 0:
            raise NfieldError(message[0])
        raise QuietExit(message[0])
    return result


class QuietExit(NfieldError):
    """An error rank 0 already reported: the other ranks exit with status 1 without repeating it."""


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    global _DATA_PARALLEL, _COORDINATION
    _DATA_PARALLEL = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _COORDINATION = None
