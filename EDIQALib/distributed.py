"""torch.distributed set-up for runs launched by ``torchrun`` (gloo on CPU, NCCL on GPU)."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch.distributed as dist


def world_from_environment() -> tuple[int, int]:
    """(rank, world size) as ``torchrun`` sets them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextmanager
def distributed_context(device: str) -> Iterator[tuple[int, int, Callable[[], None]]]:
    """Join the process group when launched by ``torchrun``; yields (rank, world, barrier)."""
    rank, world = world_from_environment()
    if world == 1:
        yield 0, 1, lambda: None
        return
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        yield rank, world, dist.barrier
    finally:
        dist.destroy_process_group()
