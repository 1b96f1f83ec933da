"""Data-parallel training over torch.distributed: one process per GPU (or CPU, with gloo).

`train.processes: N` makes the train stage start itself again under torchrun with N processes;
`torchrun --nproc-per-node N stages/train.py ...` or `accelerate launch` work the same way.
Every process takes its share of each optimizer step's micro-batches, so the run trains the
same batches in the same order as one process would, only faster.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lorapipe.core.cli import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The one process that logs, tracks and writes files."""
        return self.rank == 0


SINGLE = World()


def relaunch_under_torchrun(processes: int) -> None:
    """Replace this process with torchrun running the same command in `processes` processes."""
    if processes <= 1 or "LOCAL_RANK" in os.environ:
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    os.execv(sys.executable, [*command, *sys.argv])


def init_world(grad_accum: int) -> World:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on the CPU); one process: no group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return SINGLE
    if grad_accum % size:
        raise UserError(f"params.yaml: train.grad_accum ({grad_accum}) must be a multiple of the {size} processes")
    world = World(int(os.environ["RANK"]), size, int(os.environ["LOCAL_RANK"]))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world


def sum_across(world: World, tensors: list[torch.Tensor]) -> None:
    """Sum `tensors` over all processes in place, in one all-reduce (LoRA gradients are small)."""
    if world.size == 1:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def close_world(world: World) -> None:
    if world.size > 1:
        dist.destroy_process_group()
