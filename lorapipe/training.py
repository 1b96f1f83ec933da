"""The training loop: packed micro-batches, gradient accumulation, warmup + decay, resume."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from lorapipe.checkpoints import TrainState, resume_checkpoint, save_checkpoint
from lorapipe.cli import log, progress
from lorapipe.distributed import SINGLE, World, sum_across
from lorapipe.losses import completion_loss, mean_loss
from lorapipe.modeling import peak_memory_mb
from lorapipe.packing import IGNORE, PackedRow, collate
from lorapipe.params import OpsParams, TrainParams


class GracefulStop:
    """SIGTERM or Ctrl-C asks the loop to stop after the current step and save a checkpoint there.

    A stop that lands mid-step, mid-validation or mid-save loses nothing: the loop reaches the
    end of the step first. A second signal aborts at once (checkpoints on disk stay valid).
    """

    def __init__(self) -> None:
        self.requested = ""  # name of the signal that asked

    def install(self) -> GracefulStop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        log.info(f"train: {self.requested}: stopping after this step and saving a checkpoint (again to abort now)")


class Stopped(KeyboardInterrupt):
    """Training stopped on request; its progress is in the checkpoint named here."""


def total_steps(rows: int, params: TrainParams) -> int:
    """Optimizer steps of the run: train.max_steps, else train.epochs over the packed rows."""
    if params.max_steps:
        return params.max_steps
    micro_batches = math.ceil(rows / params.micro_batch)
    return max(1, math.ceil(params.epochs * micro_batches / params.grad_accum))


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA says OutOfMemoryError; the CPU allocator raises a RuntimeError or MemoryError."""
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(err)


def out_of_memory_message(params: TrainParams, row_tokens: int, device: torch.device) -> str:
    """What to lower when a step does not fit in memory."""
    checkpointing = "" if params.grad_checkpointing else "set train.grad_checkpointing: true, "
    return (
        f"out of memory on {device} with train.micro_batch={params.micro_batch} rows of {row_tokens} tokens: "
        f"lower train.micro_batch (raise train.grad_accum to keep the effective batch of "
        f"{params.micro_batch * params.grad_accum}), {checkpointing}or lower tokenize.seq_len; "
        "checkpoints already saved are kept and resumed"
    )


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup, then cosine or linear decay to zero (or constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress


def micro_batch_rows(step: int, accum: int, micro: int, n_rows: int, seed: int) -> list[list[int]]:
    """Row indices of the micro-batches of optimizer step `step`.

    A pure function of the step: a resumed run sees exactly the batches an uninterrupted one would.
    """
    per_epoch = math.ceil(n_rows / micro)
    out = []
    for m in range(step * accum, (step + 1) * accum):
        epoch, k = divmod(m, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n_rows)
        out.append(order[k * micro : (k + 1) * micro].tolist())
    return out


def train(
    model: torch.nn.Module,
    train_rows: Sequence[PackedRow],
    val_rows: Sequence[PackedRow],
    params: TrainParams,
    ops: OpsParams,
    *,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype,
    checkpoints: Path,
    fingerprint: str,
    on_step: Callable[[dict], None] | None = None,
    on_save: Callable[[Path], None] | None = None,
    world: World = SINGLE,
    stop: GracefulStop | None = None,
) -> TrainState:
    """Train `model` (a peft model) in place; resumes from `checkpoints` (this run's folder) when it can.

    With several processes, each takes every `world.size`-th micro-batch of a step and the
    gradients are summed across them before the update: the same training, split up.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=params.lr, weight_decay=params.weight_decay, fused=device.type == "cuda"
    )
    steps = total_steps(len(train_rows), params)
    warmup = round(params.warmup_ratio * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup, params.lr_schedule))
    state = resume_checkpoint(checkpoints, model, optimizer, scheduler, fingerprint, steps) or TrainState(
        fingerprint=fingerprint
    )
    state.sessions += 1
    use_amp = dtype != torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def amp():
        return torch.autocast(device.type, dtype=dtype) if use_amp else nullcontext()

    model.train()
    bar = progress(total=steps, initial=state.step, desc="train", unit="step", disable=not world.main)
    while state.step < steps:
        started = time.perf_counter()
        batches = [
            collate([train_rows[i] for i in rows], pad_id)
            for rows in micro_batch_rows(
                state.step, params.grad_accum, params.micro_batch, len(train_rows), params.seed
            )
        ]
        # Normalise by the tokens of the whole accumulation window (all processes), not per micro-batch.
        window_tokens = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
        state.tokens += sum(int((b["input_ids"] != pad_id).sum()) for b in batches)  # counted on the CPU
        losses = []
        for b in batches[world.rank :: world.size]:
            b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
            with amp():
                micro_loss = completion_loss(model, b, window_tokens)
            scaler.scale(micro_loss).backward()
            losses.append(micro_loss.detach())  # no .item() here: it would stall the GPU every micro-batch
        loss = torch.stack(losses).sum().reshape(1)
        # Every process stops at the same step: the stop request rides along in the same all-reduce.
        stopping = torch.tensor([float(bool(stop and stop.requested))], device=loss.device)
        sum_across(world, [p.grad for p in trainable] + [loss, stopping])
        loss_sum = float(loss)
        scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm or float("inf")))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        state.step += 1
        seconds = time.perf_counter() - started
        state.train_seconds += seconds
        row = {"step": state.step, "loss": round(loss_sum, 5), "lr": lr, "grad_norm": round(grad_norm, 4)}
        state.history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        stop_now = bool(stopping.item())
        if world.main:  # the main process alone validates, reports and saves
            if state.step % ops.log_every == 0 or state.step == steps:
                log.info(f"step {state.step}/{steps} | loss {loss_sum:.4f} | lr {lr:.2e} | {seconds * 1000:.0f} ms")
            if val_rows and (state.step % params.eval_every == 0 or state.step == steps):
                val = mean_loss(model, val_rows, params.micro_batch, pad_id, device, amp)
                state.val_history.append({"step": state.step, "val_loss": round(val, 5)})
                log.info(f"step {state.step}/{steps} | val_loss {val:.4f} | perplexity {math.exp(val):.2f}")
            if on_step:
                on_step(row)
            if state.step % ops.save_every == 0 or state.step == steps or stop_now:
                state.peak_memory_mb = max(state.peak_memory_mb, peak_memory_mb(device))
                saved = save_checkpoint(checkpoints, model, optimizer, scheduler, state, ops.keep_checkpoints)
                if on_save:
                    on_save(saved)
        if stop_now:
            bar.close()
            raise Stopped(f"stopped on request at step {state.step} of {steps}; that step is saved, rerun to resume")
    bar.close()
    return state
