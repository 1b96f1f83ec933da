"""Fine-tuning on the packed rows (QLoRA, DoRA, rsLoRA or every weight); resumes after an interruption.

Paths: the command line of dvc.yaml's `train` stage (`--help` names each).

Writes the adapter, or with lora.method full the whole model (+ tokenizer and resolved params), the run's
summary, the per-step loss and LR,
the validation loss and both drawn as a PNG. Checkpoints (`--checkpoints`) are resume state, not an
output: dvc.yaml does not track them, so DVC neither hashes them nor loses its run-cache over them.

main reads as setup (model, rows, this run's checkpoint folder), fit (lorapipe.train.training), save.
torch, transformers and PEFT are imported inside them, once the params are valid: they take
seconds to a minute to load, and a mistake in `dvc exp run -S lora.r=0` is worth one line at once.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorapipe.core.artifacts import CHECKPOINTS
from lorapipe.core.cli import log, run_cli
from lorapipe.core.outputs import atomic_dir
from lorapipe.core.params import (
    LoraParams,
    OpsParams,
    QuantParams,
    TrainParams,
    check_method_and_bits,
    check_params_unchanged,
    load_params,
    unused_lora_keys,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from lorapipe.train.checkpoints import TrainState
    from lorapipe.train.distributed import World
    from lorapipe.train.mirror import CheckpointMirror
    from lorapipe.train.tracking import Tracker
    from lorapipe.train.training import GracefulStop, TrainConfig, TrainData


@dataclass(frozen=True)
class StageParams:
    """The params.yaml sections train reads, each validated on load."""

    train: TrainParams
    lora: LoraParams
    quant: QuantParams
    ops: OpsParams  # untracked by dvc.yaml: how the run is operated, not what it computes

    def __post_init__(self) -> None:
        check_method_and_bits(self.lora, self.quant)

    @classmethod
    def load(cls) -> StageParams:
        return cls(load_params(TrainParams), load_params(LoraParams), load_params(QuantParams), load_params(OpsParams))


@dataclass(frozen=True)
class Setup:
    """What setup loads and fit and save work on."""

    model: torch.nn.Module  # the base with fresh adapters (or, lora.method full, the base itself), trained in place
    tokenizer: PreTrainedTokenizerBase
    data: TrainData
    config: TrainConfig  # train and ops params, device, dtype, this run's checkpoint folder
    tracker: Tracker  # this run's MLflow run, continued on resume
    mirror: CheckpointMirror | None  # ops.checkpoint_mirror, on the main process
    trainable: int  # trainable parameters
    versions: dict[str, str]  # of the libraries that shape the weights


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenized", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("trained", type=Path, help="the adapter, or the whole model with lora.method full")
    parser.add_argument("summary", type=Path, help="JSON: the headline losses (a DVC metric)")
    parser.add_argument("details", type=Path, help="JSON: every figure of the run (speed, memory, device, versions)")
    parser.add_argument("train_log", type=Path, help="CSV of the per-step loss and learning rate")
    parser.add_argument("val_log", type=Path, help="CSV of the validation loss")
    parser.add_argument("curve", type=Path, help="PNG of both losses")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINTS, help="resume state (default: %(default)s)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    params = StageParams.load()  # validated before torch and the rest load (see above)
    if unused := unused_lora_keys(params.lora):
        log.info(unused)
    from lorapipe.train.distributed import close_world, init_world, relaunch_under_torchrun
    from lorapipe.train.training import GracefulStop

    relaunch_under_torchrun(params.train.processes)
    world = init_world(params.train.grad_accum)
    stop = GracefulStop().install()
    job = setup(args, params, world)
    started = time.perf_counter()
    state = fit(job, stop)
    close_world(world)
    if world.main:  # the main process alone writes the trained weights, metrics and plots
        save(job, state, params, args, started)


def setup(args: argparse.Namespace, params: StageParams, world: World) -> Setup:
    """The rows, the base model made trainable, and this run's checkpoint folder and MLflow run."""
    import torch

    from lorapipe.core.stage_code import code_files
    from lorapipe.data.packing import read_rows
    from lorapipe.model.modeling import (
        add_lora,
        check_method_runs_here,
        load_model,
        load_tokenizer,
        pick_device,
        pick_dtype,
        train_all_weights,
    )
    from lorapipe.train.checkpoints import (
        checkpoint_folder,
        files_of,
        fingerprint,
        library_versions,
        list_checkpoints,
        resumable_state,
    )
    from lorapipe.train.disk_space import check_disk_space
    from lorapipe.train.mirror import CheckpointMirror
    from lorapipe.train.tracking import tracking_wanted, training_tracker
    from lorapipe.train.training import TrainConfig, TrainData, total_steps

    torch.manual_seed(params.train.seed)
    device = pick_device()
    train_rows, val_rows = read_rows(args.tokenized / "train.parquet"), read_rows(args.tokenized / "val.parquet")
    tokenizer = load_tokenizer(args.model)
    check_method_runs_here(params.lora, params.quant, args.model, device)

    # The run's identity: whatever can change its weights. Its checkpoints live in a folder of that name.
    versions = library_versions()
    inputs = {**code_files(Path(__file__)), **files_of(args.tokenized, "data"), **files_of(args.model, "base")}
    training_fingerprint = fingerprint(params.train, params.lora, params.quant, versions, files=inputs)
    checkpoints = checkpoint_folder(args.checkpoints, training_fingerprint, params.ops.keep_runs)
    mirror = CheckpointMirror.from_setting(params.ops.checkpoint_mirror, {"versions": versions}) if world.main else None
    if mirror and not list_checkpoints(checkpoints):
        mirror.restore(checkpoints)  # a new machine: go on from the last mirrored checkpoint
    # A resumed run keeps the dtype it started in (a T4's fp16 run resumed on an L4 stays fp16).
    resumed = resumable_state(checkpoints, training_fingerprint, total_steps(len(train_rows), params.train))
    dtype = pick_dtype(params.train.precision, device, "train", started_in=resumed.dtype if resumed else "")
    if params.lora.method == "full":  # fp32 weights, `dtype` compute (train_all_weights says why)
        model = train_all_weights(load_model(args.model, torch.float32, device), params.train.grad_checkpointing)
    else:
        model = load_model(args.model, dtype, device, params.quant)
        model = add_lora(model, params.lora, params.train.grad_checkpointing, quantized=params.quant.bits < 16)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(f"train: {len(train_rows):,} packed rows on {device} in {dtype}, {trainable:,} trainable params")
    if world.size > 1:
        log.info(f"train: process {world.rank + 1} of {world.size}")
    check_disk_space(args.checkpoints, trainable, params.ops, full=params.lora.method == "full")
    tracker = training_tracker(checkpoints, enabled=tracking_wanted(params.ops.mlflow, world.main))
    tracker.log_params({"train": params.train, "lora": params.lora, "quant": params.quant})
    return Setup(
        model,
        tokenizer,
        TrainData(train_rows, val_rows, tokenizer.pad_token_id),
        TrainConfig(params.train, params.ops, device, dtype, checkpoints, training_fingerprint, world),
        tracker,
        mirror,
        trainable,
        versions,
    )


def fit(job: Setup, stop: GracefulStop) -> TrainState:
    """Train, resuming this run's newest checkpoint; a failure or a stop ends the MLflow run too."""
    from lorapipe.train.training import Hooks, train

    log_every = job.config.ops.log_every
    history: list[dict] = []  # steps not yet sent to MLflow

    def on_step(row: dict) -> None:
        history.append(row)
        if row["step"] % log_every == 0:
            job.tracker.log_history(history)
            history.clear()
            check_params_unchanged()  # a run whose params were rewritten stops now, not hours later

    try:
        return train(job.model, job.data, job.config, Hooks(on_step, job.mirror.upload if job.mirror else None, stop))
    except BaseException as err:
        job.tracker.log_history(history)  # the steps since the last flush: a stopped run's history is whole
        job.tracker.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        if job.mirror:
            job.mirror.wait()  # the checkpoint a stop just saved is worth the wait
        raise


def save(job: Setup, state: TrainState, params: StageParams, args: argparse.Namespace, started: float) -> None:
    """The trained weights with their tokenizer and params record, the logs and plots, train.json and its details;
    the MLflow run ends."""
    from lorapipe.core.metric_files import TRAIN_HEADLINE, write_numbers
    from lorapipe.model.modeling import dtype_name, read_hardware
    from lorapipe.train.plots import write_loss_plots
    from lorapipe.train.tracking import finish_training
    from lorapipe.train.training_record import TrainingRecord, save_training_record, weight_files

    job.tracker.log_history(state.history)  # what came from a checkpoint too, unless the run has it
    check_params_unchanged()
    with atomic_dir(args.trained) as tmp:
        if params.lora.method == "full":  # one file, not shards: the one the record names and MLflow hashes
            job.model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
        else:
            job.model.save_pretrained(tmp, safe_serialization=True)
        job.tokenizer.save_pretrained(tmp)
        save_training_record(tmp, TrainingRecord(params.train, params.lora, params.quant))
    write_loss_plots(state.history, state.val_history, args.train_log, args.val_log, args.curve)
    device = job.config.device
    summary = {
        **state.summary(wall_seconds=time.perf_counter() - started, device=device),
        # the trained weights on disk: the adapter, or the whole model with lora.method full
        "weights_mb": round(sum(f.stat().st_size for f in args.trained.glob("*.safetensors")) / 2**20, 3),
        "lora_method": params.lora.method,
        "quant_bits": params.quant.bits,
        "device": read_hardware(device).name,  # this session's; `sessions` lists every session's
        "dtype": dtype_name(job.config.dtype),
        "trainable_params": job.trainable,
        "versions": job.versions,
    }
    write_numbers(args.summary, args.details, summary, TRAIN_HEADLINE)
    metric_files = [args.details, args.train_log, args.val_log, args.curve]
    weights = args.trained / weight_files(params.lora.method)[1]
    finish_training(job.tracker, summary, state.val_history, metric_files, weights)
    if job.mirror:
        job.mirror.wait()
        log.info(
            f"train: {job.mirror.uploads} checkpoints mirrored; training waited {job.mirror.waited_s:.1f} s for them"
        )
    log.info(f"train: done, {state.step} steps, val_loss {state.val_loss:.4f}, {params.lora.method} -> {args.trained}")


if __name__ == "__main__":
    run_cli(main)
