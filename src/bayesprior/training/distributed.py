"""Data-parallel training helpers (``torchrun`` + DDP), also correct in a single process.

The trainer computes every batch statistic through `global_sum`, a differentiable all-reduce:
each process then holds the loss of the **global** batch, and DDP's gradient averaging over W
processes gives exactly the gradient of that global loss (each process's share is summed W times
by the backward all-reduce and divided by W by DDP). The KL term is added by every process and
averaged by DDP, so it counts once. `epoch_batches` deals the same global batches in every process,
so a run on W processes with per-process batch B matches one process with batch W*B.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the number of processes, and its local device index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_context() -> DistContext:
    """The context of an initialised process group, or the single-process context."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistContext()


def init_from_environment(backend: str | None = None) -> DistContext:
    """Join the process group `torchrun` describes in the environment (no-op for one process).

    The backend defaults to ``nccl`` when CUDA is available, else ``gloo``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return current_context()


def global_sum(value: Tensor) -> Tensor:
    """Sum of `value` over all processes, with gradients (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    import warnings

    from torch.distributed.nn.functional import all_reduce

    # deprecated in favour of _functional_collectives, whose all_reduce has no backward we can rely on;
    # this one's backward is the all-reduce of the gradient, which the DDP test checks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(value, op=dist.ReduceOp.SUM)


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def global_mean_float(value: float) -> float:
    """Mean of a Python float over all processes (for logging and the scheduler's monitor)."""
    ctx = current_context()
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def epoch_batches(n_cases: int, global_batch: int, epoch: int, seed: int,
                  ctx: DistContext = DistContext()) -> list[list[int]]:
    """This process's case indices for every step of `epoch`: its share of `global_epoch_batches`."""
    return [b[ctx.rank::ctx.world_size] for b in global_epoch_batches(n_cases, global_batch, epoch, seed, ctx)]


def global_epoch_batches(n_cases: int, global_batch: int, epoch: int, seed: int,
                         ctx: DistContext = DistContext()) -> list[list[int]]:
    """The case indices of every global batch of `epoch`, the same in every process.

    A permutation seeded by (seed, epoch) is cut into global batches of `global_batch`; each process
    takes every W-th case of each global batch. In a distributed run the last partial global batch
    is filled up from the start of the permutation (as `DistributedSampler` pads), so every process
    gets the same number of cases; a single process keeps it short.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_cases, generator=generator).tolist()
    batches = [order[i:i + global_batch] for i in range(0, n_cases, global_batch)]
    if ctx.distributed and batches and len(batches[-1]) < global_batch:
        fill = (order * (global_batch // max(n_cases, 1) + 1))[: global_batch - len(batches[-1])]
        batches[-1] = batches[-1] + fill
    return batches
