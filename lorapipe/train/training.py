"""The training loop: packed micro-batches, gradient accumulation, warmup + decay, resume."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lorapipe.core.cli import UserError, duration, log
from lorapipe.core.params import OpsParams, TrainParams
from lorapipe.data.packing import IGNORE, PackedRow, collate
from lorapipe.model.modeling import dtype_name, peak_memory_mb, read_hardware
from lorapipe.train.checkpoints import TrainState, resume_checkpoint, save_checkpoint
from lorapipe.train.distributed import SINGLE, World, sum_across
from lorapipe.train.losses import completion_loss, mean_loss


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


@dataclass(frozen=True)
class TrainData:
    """The packed rows a run trains and validates on."""

    train: Sequence[PackedRow]
    val: Sequence[PackedRow]  # empty: no validation
    pad_id: int  # the tokenizer's padding id, which micro-batches are padded with


@dataclass(frozen=True)
class TrainConfig:
    """What a run holds fixed besides its model and rows: its params, where it computes, where it saves."""

    params: TrainParams
    ops: OpsParams  # log, save and keep cadences: how the run is operated, not what it computes
    device: torch.device
    dtype: torch.dtype  # autocast's; float32 trains without autocast, float16 with a gradient scaler
    checkpoints: Path  # this run's checkpoint folder: resumed from, saved to
    fingerprint: str  # the run's identity, stamped on its checkpoints: another run's are never resumed
    world: World = SINGLE  # the processes that share each step's micro-batches


@dataclass(frozen=True)
class Hooks:
    """What the caller does along the way."""

    on_step: Callable[[dict], None] | None = None  # main process: each step's log row, after its validation
    on_save: Callable[[Path], None] | None = None  # main process: each checkpoint saved
    stop: GracefulStop | None = None  # every process: a stop it requested is taken at the end of the step


def train(model: torch.nn.Module, data: TrainData, config: TrainConfig, hooks: Hooks = Hooks()) -> TrainState:
    """Train `model` (a peft model) in place; resumes from `config.checkpoints` when it can.

    With several processes, each takes every `world.size`-th micro-batch of a step and the
    gradients are summed across them before the update: the same training, split up. A step that
    does not fit in memory ends the run with one line saying what to lower.
    """
    try:
        return _train_loop(model, data, config, hooks)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        width = max(len(r.input_ids) for r in data.train)
        raise UserError(out_of_memory_message(config.params, width, config.device)) from err


def _train_loop(model: torch.nn.Module, data: TrainData, config: TrainConfig, hooks: Hooks) -> TrainState:
    params, ops, device, world = config.params, config.ops, config.device, config.world
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=params.lr, weight_decay=params.weight_decay, fused=device.type == "cuda"
    )
    steps = total_steps(len(data.train), params)
    warmup = round(params.warmup_ratio * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup, params.lr_schedule))
    scaler = torch.amp.GradScaler(device.type, enabled=config.dtype == torch.float16)
    state = resume_checkpoint(config.checkpoints, model, optimizer, scheduler, config.fingerprint, steps, scaler)
    state = state or TrainState(fingerprint=config.fingerprint, dtype=dtype_name(config.dtype))
    if state.dtype != dtype_name(config.dtype):  # the train stage resolves a resumed run's dtype from its checkpoint
        raise UserError(
            f"train: {config.checkpoints} trained in {state.dtype} so far; this process computes in "
            f"{dtype_name(config.dtype)}, which would change the run midway"
        )
    threads = torch.get_num_threads()
    session = {"device": read_hardware(device).name, "dtype": state.dtype, "threads": threads, "processes": world.size}
    session |= {"steps": 0, "tokens": 0, "seconds": 0.0}  # what this process trained, for its speed
    state.sessions.append(session)
    amp = autocast(device, config.dtype)

    model.train()
    # The progress is the step line every ops.log_every steps: its pace and ETA are this process's, since it
    # started or resumed (a resumed run's earlier steps ran on another machine, maybe).
    since, first_step = time.perf_counter(), state.step
    while state.step < steps:
        started = time.perf_counter()
        rows = micro_batch_rows(state.step, params.grad_accum, params.micro_batch, len(data.train), params.seed)
        batches = [collate([data.train[i] for i in r], data.pad_id) for r in rows]
        step_tokens = sum(int((b["input_ids"] != data.pad_id).sum()) for b in batches)  # counted on the CPU
        state.tokens += step_tokens
        loss = backward(model, batches, world, device, amp, scaler)
        # Every process stops at the same step: the stop request rides along in the same all-reduce.
        stopping = torch.tensor([float(bool(hooks.stop and hooks.stop.requested))], device=loss.device)
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
        session["steps"], session["tokens"] = session["steps"] + 1, session["tokens"] + step_tokens
        session["seconds"] += seconds
        row = {"step": state.step, "loss": round(loss_sum, 5), "lr": lr, "grad_norm": round(grad_norm, 4)}
        state.history.append(row)
        stop_now = bool(stopping.item())
        if world.main:  # the main process alone validates, reports and saves
            last = state.step == steps
            if state.step % ops.log_every == 0 or last:
                pace = (time.perf_counter() - since) / (state.step - first_step)
                log.info(
                    f"step {state.step}/{steps} | loss {loss_sum:.4f} | lr {lr:.2e} | {pace:.2f} s/step | "
                    f"{duration(pace * (steps - state.step))} left"
                )
            if data.val and (state.step % params.eval_every == 0 or last):
                val = mean_loss(model, data.val, params.micro_batch, data.pad_id, device, amp)
                state.val_history.append({"step": state.step, "val_loss": round(val, 5)})
                log.info(f"step {state.step}/{steps} | val_loss {val:.4f} | perplexity {math.exp(val):.2f}")
            if hooks.on_step:
                hooks.on_step(row)
            if state.step % ops.save_every == 0 or last or stop_now:
                state.peak_memory_mb = max(state.peak_memory_mb, peak_memory_mb(device))
                saved = save_checkpoint(
                    config.checkpoints, model, optimizer, scheduler, state, ops.keep_checkpoints, scaler
                )
                if hooks.on_save:
                    hooks.on_save(saved)
        if stop_now:
            raise Stopped(f"stopped on request at step {state.step} of {steps}; that step is saved, rerun to resume")
    return state


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], AbstractContextManager]:
    """A fresh autocast context per use in `dtype`; none in float32."""
    if dtype == torch.float32:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def backward(
    model: torch.nn.Module,
    batches: list[dict[str, torch.Tensor]],
    world: World,
    device: torch.device,
    amp: Callable[[], AbstractContextManager],
    scaler: torch.amp.GradScaler,
) -> torch.Tensor:
    """Accumulate this process's share of a step's gradients; its summed loss, shaped (1,).

    The loss is normalised by the labelled tokens of the whole accumulation window (all processes),
    not per micro-batch.
    """
    window_tokens = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    losses = []
    for b in batches[world.rank :: world.size]:
        b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
        with amp():
            micro_loss = completion_loss(model, b, window_tokens)
        scaler.scale(micro_loss).backward()
        losses.append(micro_loss.detach())  # no .item() here: it would stall the GPU every micro-batch
    return torch.stack(losses).sum().reshape(1)
