"""Resumable training checkpoints: adapter, optimizer, scheduler, RNG and history, saved atomically.

Each run keeps its checkpoints in a folder of its own, named by its fingerprint (what shapes the
weights: training params, data, base model), so `dvc exp run -S lora.r=8` neither resumes nor
deletes an r=16 run's checkpoints, and going back to r=16 resumes it. A checkpoint is complete
only once renamed into place; a newest one that fails to load falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from lorapipe.cli import log
from lorapipe.outputs import atomic_dir

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
ADAPTER_FILE = "adapter_model.safetensors"


def fingerprint(*parts: object, files: list[Path]) -> str:
    """Identity of a run: the params that shape its weights and the bytes it trains on."""
    digest = hashlib.sha256(json.dumps([repr(p) for p in parts]).encode())
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def run_folder(root: Path, run: str, keep_runs: int) -> Path:
    """`root/<run>`, after dropping the folders of all but the `keep_runs` most recent runs."""
    folder = root / run
    others = sorted(
        (p for p in root.glob("*") if p.is_dir() and p.name != run and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[keep_runs - 1 :]:
        log.info(f"train: dropping checkpoints of an older run ({old.name}; ops.keep_runs {keep_runs})")
        shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.utime(folder)  # the most recent run
    return folder


def checkpoint_name(step: int) -> str:
    """The folder of the checkpoint after `step` optimizer steps: `step-000200`."""
    return f"step-{step:06d}"


def is_checkpoint_name(name: str) -> bool:
    """Whether `name` is exactly what checkpoint_name writes (a mirror's LATEST is untrusted text)."""
    digits = name.removeprefix("step-")
    return digits.isascii() and digits.isdigit() and checkpoint_name(int(digits)) == name


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    fingerprint: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per optimizer step
    val_history: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0  # real tokens trained on
    train_seconds: float = 0.0


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    keep: int,
) -> Path:
    """Write `folder/step-NNNNNN` atomically and drop all but the newest `keep` checkpoints."""
    target = folder / checkpoint_name(state.step)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}, tmp / OPTIMIZER_FILE
        )
        (tmp / STATE_FILE).write_text(json.dumps(state.__dict__))
    for old in list_checkpoints(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, newest first (temp folders of an interrupted save are skipped)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step-*") if p.is_dir()), reverse=True)


def resume_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> TrainState | None:
    """Load the newest usable checkpoint of this run into model/optimizer; None to start fresh."""
    for junk in folder.glob(".step-*"):  # left by a save that was killed midway
        shutil.rmtree(junk, ignore_errors=True)
    for ckpt in list_checkpoints(folder):
        try:
            state = TrainState(**json.loads((ckpt / STATE_FILE).read_text()))
            if state.fingerprint != fingerprint:
                log.info(f"train: {ckpt} belongs to a run with other params or data; starting fresh")
                return None
            saved = torch.load(ckpt / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
            weights = load_file(ckpt / ADAPTER_FILE)
        except Exception as err:  # any damage means: not this one, try the previous
            log.info(f"train: checkpoint {ckpt.name} is unreadable ({type(err).__name__}); trying an older one")
            continue
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"]["cpu"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        log.info(f"train: resuming from {ckpt} (step {state.step})")
        return state
    return None
