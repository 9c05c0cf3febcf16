"""torch.distributed for runs launched by ``torchrun``: the process group (gloo on CPU, NCCL on GPU),
data-parallel models, and the split of a training batch over ranks."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import InputError

T = TypeVar("T")


def world_from_environment() -> tuple[int, int]:
    """(rank, world size) as ``torchrun`` sets them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextmanager
def distributed_context(device: str) -> Iterator[tuple[int, int]]:
    """Join the process group when launched by ``torchrun``; yields (rank, world). On GPUs each rank
    takes the device of its local rank: a GPU's index (``cuda:N``) is an input error there."""
    rank, world = world_from_environment()
    if world == 1:
        yield 0, 1
        return
    if device.startswith("cuda:"):
        raise InputError(f"--device {device}: under torchrun each rank takes the GPU of its local rank; pass "
                         "--device cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # ranks wait while rank 0 builds a training bank or validates a snapshot: allow hours, not minutes
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timedelta(hours=6))
    try:
        yield rank, world
    finally:
        dist.destroy_process_group()


def data_parallel(model: nn.Module, world: int) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several ranks (gradients averaged
    across ranks at each backward pass), else ``model`` itself."""
    if world == 1:
        return model
    return DistributedDataParallel(model, find_unused_parameters=True)


def split_parts(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` cut into ``parts`` interleaved micro-batches (part i = ``items[i::parts]``).

    A rank's share of a batch is ``batch[rank::world]``; cutting it into ``accumulate`` parts and
    averaging the gradients over the parts and the ranks gives the step of the whole batch cut into
    ``world × accumulate`` parts: one process with ``accumulate = N`` takes the gradient steps of N ranks
    (BatchNorm's running statistics aside: under DistributedDataParallel they follow rank 0).
    """
    return [list(items[i::parts]) for i in range(parts)]


def step_gradients(model: nn.Module, parts: list[T], loss_of: Callable[[T], torch.Tensor]) -> float:
    """Backward pass over each part, gradients averaged over the parts (and, under DistributedDataParallel,
    synchronised across ranks once, with the last part). Returns the mean loss of the parts."""
    total = 0.0
    for i, part in enumerate(parts):
        sync = i == len(parts) - 1 or not isinstance(model, DistributedDataParallel)
        with nullcontext() if sync else model.no_sync():
            loss = loss_of(part) / len(parts)
            loss.backward()
        total += float(loss.detach())
    return total


def sum_over_ranks(value: float, world: int) -> float:
    """The sum of ``value`` over all ranks (itself for one process)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t)


def mean_over_ranks(value: float, world: int) -> float:
    """The mean of ``value`` over all ranks (itself for one process)."""
    return sum_over_ranks(value, world) / world


def barrier(world: int) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if world > 1:
        dist.barrier()
