"""Will the run's checkpoints fit on the disk? Asked before training starts, not answered by a full disk hours in.

What the checkpoints folder comes to: `ops.keep_runs` runs of `ops.keep_checkpoints` checkpoints each, plus
one more while a save is under way (the new checkpoint is complete before the oldest goes), each holding the
trainable parameters in fp32 and AdamW's two fp32 moments. For a LoRA adapter that is megabytes; for
lora.method full it is the whole model three times over (TinyLlama 1.1B: 12.3 GiB a checkpoint, 86 GiB for
3 runs of 2). Then the trained weights the stage writes at the end. Checkpoints already in the folder count
as space the run may use: they are part of that total.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lorapipe.core.cli import UserError
from lorapipe.core.params import OpsParams

CHECKPOINT_BYTES_PER_PARAM = 12  # a trainable parameter in fp32 (4) and AdamW's two fp32 moments (8)
OUTPUT_BYTES_PER_PARAM = 4  # the trained weights train saves at the end, fp32


@dataclass(frozen=True)
class CheckpointSpace:
    """The bytes a run's checkpoints and trained weights can take at their most."""

    trainable: int  # trainable parameters
    keep_checkpoints: int  # ops.keep_checkpoints
    keep_runs: int  # ops.keep_runs

    @property
    def per_checkpoint(self) -> int:
        return self.trainable * CHECKPOINT_BYTES_PER_PARAM

    @property
    def checkpoints(self) -> int:
        """Every run's checkpoints, and the one being saved."""
        return self.per_checkpoint * (self.keep_runs * self.keep_checkpoints + 1)

    @property
    def output(self) -> int:
        return self.trainable * OUTPUT_BYTES_PER_PARAM

    @property
    def total(self) -> int:
        return self.checkpoints + self.output


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def disk_space_refusal(space: CheckpointSpace, free: int, held: int, where: Path, full: bool) -> str | None:
    """Why `space` does not fit in `free` bytes plus the `held` bytes of checkpoints already under `where`, with
    what to change; None when it fits. `full`: every weight is trained (lora.method full)."""
    if space.total <= free + held:
        return None
    what = "every weight" if full else "the adapter"
    method = "train an adapter (lora.method lora, dora or rslora), " if full else ""
    return (
        f"{where}: not enough disk space for this run's checkpoints: ops.keep_runs {space.keep_runs} x "
        f"ops.keep_checkpoints {space.keep_checkpoints} (+1 while one is saved) x {_size(space.per_checkpoint)} "
        f"({space.trainable / 1e6:,.1f}M trainable parameters, {what}, at {CHECKPOINT_BYTES_PER_PARAM} bytes: "
        f"fp32 weights and AdamW's two moments) + {_size(space.output)} of trained weights = {_size(space.total)}, "
        f"and its disk has {_size(free)} free (+ {_size(held)} of checkpoints already there); lower ops.keep_runs "
        f"or ops.keep_checkpoints, {method}or free some space"
    )


def folder_bytes(folder: Path) -> int:
    """The size of the files under `folder` (0 when there is none)."""
    return sum(os.lstat(Path(top, name)).st_size for top, _, names in os.walk(folder) for name in names)


def check_disk_space(checkpoints_root: Path, trainable: int, ops: OpsParams, full: bool) -> None:
    """UserError when the checkpoints `ops` keeps, and the trained weights, cannot fit on the disk of
    `checkpoints_root` (models/checkpoints)."""
    space = CheckpointSpace(trainable, ops.keep_checkpoints, ops.keep_runs)
    checkpoints_root.mkdir(parents=True, exist_ok=True)
    refusal = disk_space_refusal(
        space, shutil.disk_usage(checkpoints_root).free, folder_bytes(checkpoints_root), checkpoints_root, full
    )
    if refusal:
        raise UserError(refusal)
