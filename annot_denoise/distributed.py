"""PyTorch's own distributed engine, gated on torchrun's environment in one place.

``torchrun --nproc_per_node N -m annot_denoise train cfg.yaml`` sets RANK,
WORLD_SIZE and LOCAL_RANK; :func:`setup` then joins the process group (NCCL on
CUDA, gloo on the CPU) and picks this rank's GPU. A plain ``annot-denoise``
run has none of these variables and behaves exactly as before (world of one).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, writes TensorBoard, checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_env() -> World:
    """The world torchrun describes (a world of one without torchrun)."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


def rank_device(world: World, device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` on GPUs under torchrun."""
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def shard(items: list, world: World) -> list:
    """This rank's share of ``items``: every ``size``-th from ``rank`` (deterministic;
    the shares are disjoint and their union is ``items``)."""
    return items[world.rank :: world.size]


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched by torchrun; return the world and the
    device this rank uses (``cuda:LOCAL_RANK`` on GPUs)."""
    world = from_env()
    if not world.distributed:
        return world, device
    device = rank_device(world, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        log.debug("rank %d of %d joined (%s)", world.rank, world.size, backend)
    return world, device


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum over ranks (identity in a world of one)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank: keeps stopping decisions in step."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def min_over_ranks(value: int, world: World, device: torch.device) -> int:
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def sync_buffers(model: torch.nn.Module, world: World) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    DDP keeps parameters identical but each rank updates its own running
    statistics after the last broadcast; validation and the saved weights must
    be the same network everywhere.
    """
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
