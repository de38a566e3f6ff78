"""Many processes under ``torchrun``: PyTorch's own ``DistributedDataParallel``, nothing home-made.

``torchrun --nproc_per_node N cli.py fit ...`` starts N copies of the command; each reads its place from
the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). Every global batch of
``--batch-size`` images is split across the ranks (rank r takes the r-th of N near-equal shares of the
same shuffled indices) and each rank's loss, a sum over its images, is multiplied by N: DDP averages
gradients over the ranks, so the step is that of the sum over the whole global batch, the optimisation
problem of one process. Ranks draw different noise (rank 0 the single process's stream); rank 0 alone
writes. Without torchrun (``WORLD_SIZE`` unset or 1) every function here is the single process's no-op.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError

# How long a collective waits for a rank before the job ends with an error instead of hanging; set by
# PYROVAE_DIST_TIMEOUT (seconds). Long enough for rank 0's pictures and checkpoints between epochs.
TIMEOUT = timedelta(seconds=float(os.environ.get("PYROVAE_DIST_TIMEOUT", 600)))


@dataclass(frozen=True)
class Group:
    """This process's place among ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def share(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's share of ``rows``: the ``rank``-th of ``world_size`` near-equal contiguous parts."""
        return rows.tensor_split(self.world_size)[self.rank] if self.active else rows


# One process, no torchrun: the default of every function that takes a group.
SINGLE = Group()


def current() -> Group:
    """The group torchrun's environment describes (one process without it)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    except ValueError as e:
        raise UserError(f"torchrun's RANK, WORLD_SIZE or LOCAL_RANK is not an integer: {e}") from None
    return Group(rank, world_size, local_rank)


def device_for(device: torch.device, group: Group) -> torch.device:
    """One GPU per local rank under torchrun; the CPU is shared."""
    if device.type == "cuda" and group.active:
        return torch.device("cuda", group.local_rank)
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Group]:
    """Join torchrun's process group for the block (NCCL on CUDA, gloo on the CPU), and leave it after."""
    group = current()
    if not group.active or dist.is_initialized():
        yield group
        return
    _end_with_parent()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield group
    finally:
        gc.collect()  # DDP reducers left in reference cycles go first, not at the interpreter's exit
        dist.destroy_process_group()


def _end_with_parent() -> None:
    """Have Linux send this rank SIGTERM when its torchrun agent dies (torchrun starts each rank in a
    session of its own, so a SIGKILL of the agent alone would leave the ranks running, orphaned, still
    writing the run directory and holding the ports a new job may reuse)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the agent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def rank_seed(seed: int, rank: int) -> int:
    """The noise seed of ``rank``: rank 0 keeps the run's seed (the single process's stream)."""
    return seed if rank == 0 else (seed + 1_000_003 * rank) % 2**32


def agree(group: Group, error: BaseException | None) -> None:
    """Raise on every rank if any rank failed, so no rank waits on one that left: the failing rank's
    own error there, a one-line :class:`UserError` naming it elsewhere."""
    if not group.active:
        if error is not None:
            raise error
        return
    messages: list[Any] = [None] * group.world_size
    dist.all_gather_object(messages, None if error is None else str(error) or type(error).__name__)
    if error is not None:
        raise error
    for rank, message in enumerate(messages):
        if message is not None:
            raise UserError(f"rank {rank}: {message}")


@contextlib.contextmanager
def together(group: Group) -> Iterator[None]:
    """Run the block on every rank and meet after it: if it failed on any rank, :func:`agree` raises on
    all (the block must hold no collective, or ranks could pair mismatched ones)."""
    try:
        yield
    except Exception as e:  # every rank must hear of it, whatever it is
        agree(group, e)
    agree(group, None)


def broadcast(group: Group, tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank (same shape and dtype on each)."""
    if group.active:
        dist.broadcast(tensor, src=0)
    return tensor


def all_sum(group: Group, tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``tensor``."""
    if group.active:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather(group: Group, value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not group.active:
        return [value]
    values: list[Any] = [None] * group.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(group: Group) -> None:
    if group.active:
        dist.barrier()
