"""QLoRA fine-tuning on the packed rows; resumes from the newest checkpoint after an interruption.

Paths: the command line of dvc.yaml's `train` stage (`--help` names each).

Writes the adapter (+ tokenizer and resolved params), the run's summary, the per-step loss and LR,
the validation loss and both drawn as a PNG. Checkpoints (`--checkpoints`) are resume state, not an
output: dvc.yaml does not track them, so DVC neither hashes them nor loses its run-cache over them.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from lorapipe.artifacts import CHECKPOINTS
from lorapipe.cli import UserError, log, run_cli
from lorapipe.outputs import atomic_dir, sha256_of, write_json
from lorapipe.params import LoraParams, OpsParams, QuantParams, TrainParams, check_params_unchanged, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenized", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("summary", type=Path, help="JSON: loss, perplexity, speed, memory")
    parser.add_argument("train_log", type=Path, help="CSV of the per-step loss and learning rate")
    parser.add_argument("val_log", type=Path, help="CSV of the validation loss")
    parser.add_argument("curve", type=Path, help="PNG of both losses")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINTS, help="resume state (default: %(default)s)")
    args = parser.parse_args()
    params, lora, quant, ops = (
        load_params(TrainParams),
        load_params(LoraParams),
        load_params(QuantParams),
        load_params(OpsParams),
    )
    # Imported once the params are valid: torch, transformers and PEFT take seconds to a minute to
    # load, and a mistake in `dvc exp run -S lora.r=0` is worth one line at once, not after that.
    import torch

    from lorapipe.checkpoints import checkpoint_folder, files_of, fingerprint, library_versions, list_checkpoints
    from lorapipe.distributed import close_world, init_world, relaunch_under_torchrun
    from lorapipe.mirror import CheckpointMirror
    from lorapipe.modeling import add_lora, load_model, load_tokenizer, pick_device, pick_dtype
    from lorapipe.packing import read_rows
    from lorapipe.plots import write_loss_plots
    from lorapipe.stage_code import code_files
    from lorapipe.tracking import ADAPTER_TAG, training_tracker
    from lorapipe.training import GracefulStop, is_out_of_memory, out_of_memory_message, train
    from lorapipe.training_record import TrainingRecord, save_training_record

    relaunch_under_torchrun(params.processes)
    world = init_world(params.grad_accum)
    stop = GracefulStop().install()

    torch.manual_seed(params.seed)
    device = pick_device()
    dtype = pick_dtype(params.precision, device, training=True)
    train_rows, val_rows = read_rows(args.tokenized / "train.parquet"), read_rows(args.tokenized / "val.parquet")
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype, device, quant)
    model = add_lora(model, lora, params.grad_checkpointing, quantized=quant.bits < 16)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(f"train: {len(train_rows):,} packed rows on {device} in {dtype}, {trainable:,} trainable params")
    if world.size > 1:
        log.info(f"train: process {world.rank + 1} of {world.size}")

    versions = library_versions()
    inputs = {**code_files(Path(__file__)), **files_of(args.tokenized, "data"), **files_of(args.model, "base")}
    training_fingerprint = fingerprint(params, lora, quant, versions, files=inputs)
    checkpoints = checkpoint_folder(args.checkpoints, training_fingerprint, ops.keep_runs)
    mirror = CheckpointMirror.from_setting(ops.checkpoint_mirror) if world.main else None
    if mirror and not list_checkpoints(checkpoints):
        mirror.restore(checkpoints)  # a new machine: go on from the last mirrored checkpoint
    tracker = training_tracker(checkpoints, enabled=world.main)
    tracker.log_params({"train": params, "lora": lora, "quant": quant})
    history: list[dict] = []

    def track_step(row: dict) -> None:
        history.append(row)
        if row["step"] % ops.log_every == 0:
            tracker.log_history(history)
            history.clear()
            check_params_unchanged()  # a run whose params were rewritten stops now, not hours later

    started = time.perf_counter()
    try:
        state = train(
            model,
            train_rows,
            val_rows,
            params,
            ops,
            pad_id=tokenizer.pad_token_id,
            device=device,
            dtype=dtype,
            checkpoints=checkpoints,
            fingerprint=training_fingerprint,
            on_step=track_step,
            on_save=mirror.upload if mirror else None,
            world=world,
            stop=stop,
        )
    except BaseException as err:
        tracker.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        if mirror:
            mirror.wait()  # the checkpoint a stop just saved is worth the wait
        if isinstance(err, RuntimeError | MemoryError) and is_out_of_memory(err):
            width = max(len(r.input_ids) for r in train_rows)
            raise UserError(out_of_memory_message(params, width, device)) from err
        raise
    close_world(world)
    if not world.main:
        return  # the main process writes the adapter, metrics and plots
    tracker.log_history(state.history)  # what came from a checkpoint too, unless the run has it

    check_params_unchanged()
    with atomic_dir(args.adapter) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_training_record(tmp, TrainingRecord(params, lora, quant))
    final_val = state.val_history[-1]["val_loss"] if state.val_history else float("nan")
    recent = [row["loss"] for row in state.history[-10:]]
    write_loss_plots(state.history, state.val_history, args.train_log, args.val_log, args.curve)
    summary = {
        "steps": state.step,
        "train_loss": round(sum(recent) / len(recent), 4),
        "val_loss": final_val,
        "val_perplexity": round(math.exp(final_val), 3) if state.val_history else None,
        "tokens": state.tokens,
        # Speed, time and memory depend on the machine and its load. They cover the processes that
        # trained this run's steps (`sessions`: 1 + the resumes), not only this one.
        "tokens_per_s": round(state.tokens / max(state.train_seconds, 1e-9), 1),
        "train_seconds": round(state.train_seconds, 1),
        "sessions": state.sessions,
        "wall_seconds": round(time.perf_counter() - started, 1),  # this process's, resumed or not
        "peak_memory_mb": state.peak_memory_mb,
        # what peak_memory_mb measured: the allocator's peak on a GPU, the whole process's peak RSS on the CPU
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss",
        "adapter_mb": round(sum(f.stat().st_size for f in args.adapter.glob("*.safetensors")) / 2**20, 3),
        "quant_bits": quant.bits,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "trainable_params": trainable,
        "versions": versions,
    }
    write_json(args.summary, summary)
    tracker.log_history(state.val_history)
    # val_loss is already a per-step history; logging it again would add a duplicate point.
    tracker.log_metrics({k: v for k, v in summary.items() if k not in ("steps", "val_loss")}, step=state.step)
    tracker.log_artifacts([args.summary, args.train_log, args.val_log, args.curve], "metrics")
    if os.environ.get("LORAPIPE_MLFLOW_LOG_ADAPTER") == "1":
        tracker.log_artifacts([args.adapter], "adapter")
    tracker.set_tag(ADAPTER_TAG, sha256_of(args.adapter / "adapter_model.safetensors"))
    tracker.finish()
    if mirror:
        mirror.wait()
        log.info(f"train: {mirror.uploads} checkpoints mirrored; training waited {mirror.waited_s:.1f} s for them")
    log.info(f"train: done, {state.step} steps, val_loss {final_val:.4f}, adapter -> {args.adapter}")


if __name__ == "__main__":
    run_cli(main)
