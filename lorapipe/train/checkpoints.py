"""Resumable training checkpoints: adapter, optimizer, scheduler, RNG and history, saved atomically.

With lora.method full a checkpoint holds the whole model in fp32 plus AdamW's two fp32 moments:
12 bytes per parameter (1.5 GiB for SmolLM2-135M, 12.3 GiB for TinyLlama), times ops.keep_checkpoints.

Each run keeps its checkpoints in a folder of its own, named by its fingerprint: everything that
can change its weights (the stage's code, the base model's files, the packed data, the training
params, the versions of the libraries that compute them). So `dvc exp run -S lora.r=8` neither
resumes nor deletes an r=16 run's checkpoints, an edited loss or a new base weight file never
resumes the old run, and going back to an interrupted r=16 run resumes it. Only an interrupted run
is resumed: a run that reached its last step trains again from scratch when the stage is forced.
A checkpoint is complete only once renamed into place; a newest one that fails to load, or that
another run left in the folder, falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, load_model, save_model

from lorapipe.core.cli import log
from lorapipe.core.outputs import atomic_dir

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
ADAPTER_FILE = "adapter_model.safetensors"
MODEL_FILE = "model.safetensors"  # a fully fine-tuned model's weights


# Libraries whose version can change the trained weights (kernels, quantization, LoRA init).
WEIGHT_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")


def library_versions() -> dict[str, str]:
    """The installed version of each of WEIGHT_LIBRARIES ('' where one is not installed)."""
    versions = {}
    for name in WEIGHT_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def files_of(folder: Path, label: str) -> dict[str, Path]:
    """`label/<relative name>` -> path for every file under `folder`: a fingerprint's `files`, named
    independently of where the folder lies (a new VM, a copied workspace)."""
    names = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    # Hidden entries are no input: a killed writer's temp file, a tool's cache folder.
    return {
        f"{label}/{name}": p for name, p in names.items() if not any(part.startswith(".") for part in name.split("/"))
    }


def fingerprint(*parts: object, files: Mapping[str, Path]) -> str:
    """Identity of a run: the params that shape its weights and every byte it is computed from, each
    file under its name (a renamed or moved file counts, a file's absolute location does not)."""
    digest = hashlib.sha256(json.dumps([repr(p) for p in parts]).encode())
    for name in sorted(files):
        digest.update(b"\0" + name.encode() + b"\0")
        with open(files[name], "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def checkpoint_folder(root: Path, training_fingerprint: str, keep_runs: int) -> Path:
    """`root/<training_fingerprint>`: the run's checkpoints, after dropping the folders of all but the
    `keep_runs` most recent runs."""
    folder = root / training_fingerprint
    others = sorted(
        (p for p in root.glob("*") if p.is_dir() and p.name != training_fingerprint and not p.name.startswith(".")),
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


def speed(session: dict[str, Any]) -> dict[str, Any]:
    """A session's seconds rounded and its tokens/s; sessions saved before they counted their steps have neither."""
    if "seconds" not in session:
        return {}
    return {
        "seconds": round(session["seconds"], 1),
        "tokens_per_s": round(session["tokens"] / max(session["seconds"], 1e-9), 1),
    }


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    fingerprint: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per optimizer step
    val_history: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0  # real tokens trained on
    # Summed over the processes that trained this run's steps (the first and each resume), so a
    # resumed run reports what its steps cost, not what its last session did.
    train_seconds: float = 0.0
    peak_memory_mb: float = 0.0  # the highest of those processes' peaks
    dtype: str = ""  # what the run computes in (fp16, bf16, fp32), resolved at its start and kept on resume
    # One per process that trained steps (the first and each resume): its device, dtype and torch threads,
    # which all change the numbers (the same batch's loss differs in the 5th digit with 1 or 2 threads).
    sessions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def val_loss(self) -> float:
        """The last validation loss; NaN without validation."""
        return self.val_history[-1]["val_loss"] if self.val_history else float("nan")

    def summary(self, wall_seconds: float, device: torch.device) -> dict[str, Any]:
        """The run's numbers for train_details.json (train.json takes its losses): steps, losses, tokens,
        speed, time and memory."""
        recent = [row["loss"] for row in self.history[-10:]]
        # First, as the file's first list: what DVC plots of it (dvc.yaml), each session's speed.
        sessions = [session | speed(session) for session in self.sessions]
        return {
            "sessions": sessions,
            "steps": self.step,
            "train_loss": round(sum(recent) / len(recent), 4),
            "val_loss": self.val_loss,
            "val_perplexity": round(math.exp(self.val_loss), 3) if self.val_history else None,
            "tokens": self.tokens,
            # Speed, time and memory depend on the machine and its load. They cover the processes that
            # trained this run's steps (`sessions`: the first and each resume), not only this one.
            "tokens_per_s": round(self.tokens / max(self.train_seconds, 1e-9), 1),
            "train_seconds": round(self.train_seconds, 1),
            "wall_seconds": round(wall_seconds, 1),  # this process's, resumed or not
            "peak_memory_mb": self.peak_memory_mb,
            # what peak_memory_mb measured: the allocator's peak on a GPU, the whole process's peak RSS on the CPU
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss",
        }


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    keep: int,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write `folder/step-NNNNNN` atomically and drop all but the newest `keep` checkpoints.

    With fp16, the gradient scaler's state (its loss scale, lowered at each overflow, and the steps since)
    is saved too: a resume that restarted at the initial scale would skip other steps than the
    uninterrupted run."""
    target = folder / checkpoint_name(state.step)
    with atomic_dir(target) as tmp:
        if isinstance(model, PeftModel):
            model.save_pretrained(tmp, safe_serialization=True)
        else:  # every weight: safetensors' save_model keeps tied weights (embeddings, lm_head) once
            save_model(model, str(tmp / MODEL_FILE))
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        scaling = scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng, "scaler": scaling},
            tmp / OPTIMIZER_FILE,
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


def resumable_state(folder: Path, fingerprint: str, total_steps: int) -> TrainState | None:
    """The state of the checkpoint this run would resume (its newest readable one, unless the run finished),
    read without loading any weights: what a resume must know before the model loads, such as its dtype."""
    for ckpt in list_checkpoints(folder):
        try:
            state = TrainState(**json.loads((ckpt / STATE_FILE).read_text()))
        except Exception:  # damaged: resume_checkpoint falls back past it too
            continue
        if state.fingerprint == fingerprint:
            return state if state.step < total_steps else None
    return None


def resume_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
    total_steps: int,
    scaler: torch.amp.GradScaler | None = None,
) -> TrainState | None:
    """Load the newest usable checkpoint of this interrupted run into model/optimizer; None to start fresh.

    Starting fresh empties the folder: what is left there is a finished run's (forced to train
    again), another run's or damaged, and its step numbers must not outrank the new run's.
    """
    for junk in folder.glob(".step-*"):  # left by a save that was killed midway
        shutil.rmtree(junk, ignore_errors=True)
    for ckpt in list_checkpoints(folder):
        try:
            state = TrainState(**json.loads((ckpt / STATE_FILE).read_text()))
            if state.fingerprint != fingerprint:
                log.info(f"train: {ckpt} belongs to another run (other code, data, base or params); skipping it")
                continue
            if state.step >= total_steps:
                log.info(
                    f"train: {ckpt} is this run's last step: it finished with the same code, data, base and "
                    "params, so it trains again from scratch (only an interrupted run resumes)"
                )
                break
            saved = torch.load(ckpt / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
            if isinstance(model, PeftModel):
                set_peft_model_state_dict(model, load_file(ckpt / ADAPTER_FILE))
            else:
                load_model(model, str(ckpt / MODEL_FILE))  # strict: a missing or extra tensor is damage
        except Exception as err:  # any damage means: not this one, try the previous
            log.info(f"train: checkpoint {ckpt.name} is unreadable ({type(err).__name__}); trying an older one")
            continue
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"]["cpu"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        log.info(f"train: resuming from {ckpt} (step {state.step})")
        return state
    for ckpt in list_checkpoints(folder):
        shutil.rmtree(ckpt, ignore_errors=True)
    return None
