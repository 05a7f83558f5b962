"""Data-parallel training under ``torchrun`` (DDP): gloo on CPUs, NCCL on GPUs.

``torchrun --nproc_per_node=N -m tinydyn train ...`` runs the same command in N processes. Each
process takes every N-th image of the epoch's order (``DistributedSampler`` semantics: process
``r`` of ``N`` gets positions r, r+N, ...), so the N shards of a step together are exactly the
batch one process would take; ``--batch-size`` stays the global batch. DDP averages gradients;
only process 0 writes checkpoints and evaluates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tinydyn.errors import TinydynError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> Dist:
    """The process group torchrun describes in the environment (a single process without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise TinydynError("WORLD_SIZE, RANK or LOCAL_RANK is not a number: launch with torchrun") from None
    return Dist(rank, world, local)


def pick_device(requested: str, where: Dist) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else the CPU. Under torchrun each process takes
    the GPU of its local rank."""
    if requested not in ("auto", "cpu", "cuda"):
        raise TinydynError(f"unknown device '{requested}': use cpu, cuda or auto")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TinydynError("--device cuda but torch sees no GPU: use --device cpu (or auto)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", where.local_rank % torch.cuda.device_count())


def start(where: Dist, device: torch.device) -> None:
    if where.active and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def stop(where: Dist) -> None:
    if where.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(where: Dist) -> None:
    if where.active:
        dist.barrier()


def broadcast_module(module: torch.nn.Module, where: Dist) -> None:
    """Every parameter and buffer to process 0's values. DDP keeps parameters equal through
    averaged gradients, but values a process sets itself (Brevitas initialises activation scales
    from the statistics of the images it saw) would drift apart: this puts them back."""
    if not where.active:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, 0)


def all_sum(values: torch.Tensor, where: Dist) -> torch.Tensor:
    if where.active:
        dist.all_reduce(values)
    return values
