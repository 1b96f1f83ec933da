"""The disk-space check before training: the checkpoints a run keeps, against the free space of their disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lorapipe.train.disk_space import CHECKPOINT_BYTES_PER_PARAM, CheckpointSpace, disk_space_refusal
from tests.workspace import ROOT, assert_one_line_error, child_env, copy_workspace, stage_args

TINYLLAMA = 1_100_048_384  # parameters
CHECKPOINTS = Path("models/checkpoints")
GB = 10**9


def test_the_checkpoints_a_run_keeps_are_weighed_against_the_free_space():
    full = CheckpointSpace(TINYLLAMA, keep_checkpoints=2, keep_runs=3)
    assert full.per_checkpoint == TINYLLAMA * CHECKPOINT_BYTES_PER_PARAM  # fp32 weights and AdamW's two moments
    assert full.total == full.per_checkpoint * (3 * 2 + 1) + TINYLLAMA * 4  # the one being saved; the final model
    # The cloud task's 100 GB disk with 20 GB taken by the system, the data and the base.
    message = disk_space_refusal(full, free=80 * GB, held=0, where=CHECKPOINTS, full=True)
    assert "\n" not in message and message.startswith("models/checkpoints: not enough disk space")
    assert "ops.keep_runs 3 x ops.keep_checkpoints 2 (+1 while one is saved) x 12.3 GiB" in message
    assert "1,100.0M trainable parameters, every weight" in message and "= 90.2 GiB" in message
    assert "has 74.5 GiB free (+ 0.0 KiB of checkpoints already there)" in message
    assert "lower ops.keep_runs or ops.keep_checkpoints, train an adapter (lora.method lora" in message
    # Checkpoints already on the disk are part of that total, and what one run keeps can fit.
    assert disk_space_refusal(full, free=10 * GB, held=90 * GB, where=CHECKPOINTS, full=True) is None
    single = CheckpointSpace(TINYLLAMA, keep_checkpoints=1, keep_runs=1)
    assert disk_space_refusal(single, free=80 * GB, held=0, where=CHECKPOINTS, full=True) is None
    # TinyLlama's LoRA r=16 adapter on every projection: megabytes.
    lora = CheckpointSpace(12_615_680, keep_checkpoints=2, keep_runs=3)
    assert disk_space_refusal(lora, free=2 * GB, held=0, where=CHECKPOINTS, full=False) is None
    tight = disk_space_refusal(lora, free=100 * 2**20, held=0, where=CHECKPOINTS, full=False)
    assert "x 144.4 MiB" in tight and "the adapter" in tight and "lora.method" not in tight


def test_train_refuses_before_training_when_the_checkpoints_cannot_fit(prepared, tmp_path):
    """The train stage itself, on a disk with 64 KiB free (shutil.disk_usage faked in its process)."""
    ws = copy_workspace(prepared, tmp_path / "ws")
    fake = (
        "import collections, runpy, shutil, sys\n"
        "shutil.disk_usage = lambda path: collections.namedtuple('Usage', 'total used free')(2**30, 2**30, 2**16)\n"
        f"sys.argv = [{str(ROOT / 'stages/train.py')!r}, *{list(stage_args('train'))!r}]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", fake], cwd=ws, capture_output=True, text=True, env=child_env())
    assert_one_line_error(result, "models/checkpoints: not enough disk space", "has 64.0 KiB free", "ops.keep_runs")
    assert not (ws / "models/trained").exists() and not list(ws.glob("models/checkpoints/*/step-*"))
