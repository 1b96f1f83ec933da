"""Training throughput: the seed-style HF Trainer recipe vs the train stage's loop, same data, same budget.

    python bench/train_throughput.py --tokens 16384 [--micro-batch 8 --seq-len 512]

Baseline (the seed notebooks): prompt+response texts joined with EOS and cut into 128-token
blocks (examples attend across blocks' boundaries), loss on every token, HF Trainer,
micro-batch 8, gradient checkpointing, nf4 QLoRA r=16 on all 7 projections.
Ours: lorapipe.train.training.train on the tokenize stage's packed rows (no cross-example attention,
completion-only loss), with the micro-batch and checkpointing given here.
Both then get the same validation loss: completion-only, on data/tokenized/val.parquet.
Reads models/base and data/tokenized from a finished `make demo` / `dvc repro tokenize`.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from lorapipe.core.params import LoraParams, OpsParams, QuantParams, TrainParams, load_params
from lorapipe.data.packing import PackedRow, read_rows
from lorapipe.model.modeling import add_lora, load_model, load_tokenizer, peak_memory_mb, pick_device, pick_dtype
from lorapipe.train.losses import mean_loss
from lorapipe.train.training import TrainConfig, TrainData, train

BLOCK = 128  # the seed's constant-length packing


def fresh_model(model_dir: Path, device, dtype, checkpointing: bool):
    torch.manual_seed(0)
    model = load_model(model_dir, dtype, device, load_params(QuantParams))
    lora = dataclasses.replace(load_params(LoraParams), r=16, alpha=16.0)
    return add_lora(model, lora, checkpointing, quantized=True)


def run_baseline(model_dir: Path, rows: list[PackedRow], budget: int, device, dtype) -> dict:
    from transformers import Trainer, TrainingArguments

    stream = [t for r in rows for t in r.input_ids]  # what the seed's packing sees
    steps = max(1, budget // (8 * BLOCK))
    blocks = [stream[i : i + BLOCK] for i in range(0, steps * 8 * BLOCK, BLOCK)]
    data = [{"input_ids": b, "labels": b} for b in blocks if len(b) == BLOCK]
    model = fresh_model(model_dir, device, dtype, checkpointing=True)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=8,
            max_steps=steps,
            learning_rate=2e-4,
            gradient_checkpointing=True,
            bf16=dtype == torch.bfloat16,
            fp16=dtype == torch.float16,
            use_cpu=device.type == "cpu",
            logging_steps=10**9,
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"model": model, "tokens": steps * 8 * BLOCK, "seconds": seconds}


def run_ours(
    model_dir: Path, rows: list[PackedRow], budget: int, micro: int, checkpointing: bool, device, dtype
) -> dict:
    per_step = micro * sum(len(r.input_ids) for r in rows) / len(rows)
    # The run's params (the workspace's params.yaml and settings.yaml) with this comparison's budget and knobs.
    params = dataclasses.replace(
        load_params(TrainParams),
        max_steps=max(1, round(budget / per_step)),
        micro_batch=micro,
        grad_accum=1,
        grad_checkpointing=checkpointing,
        lr=2e-4,
        eval_every=10**9,
    )
    ops = dataclasses.replace(load_params(OpsParams), save_every=10**9, log_every=10**9)
    model = fresh_model(model_dir, device, dtype, checkpointing)
    with tempfile.TemporaryDirectory() as ckpt:
        started = time.perf_counter()
        config = TrainConfig(params, ops, device, dtype, checkpoints=Path(ckpt), fingerprint="bench")
        state = train(model, TrainData(rows, [], pad_id=0), config)
        seconds = time.perf_counter() - started
    return {"model": model, "tokens": state.tokens, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/base"))
    parser.add_argument("--tokenized", type=Path, default=Path("data/tokenized"))
    parser.add_argument("--tokens", type=int, default=16384, help="training token budget per side")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--no-checkpointing", action="store_true", help="ours without gradient checkpointing")
    args = parser.parse_args()
    device = pick_device()
    dtype = pick_dtype("auto", device, "train")
    tokenizer = load_tokenizer(args.model)
    rows, val = read_rows(args.tokenized / "train.parquet"), read_rows(args.tokenized / "val.parquet")
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else nullcontext

    results = {}
    for name, run in (
        ("baseline", lambda: run_baseline(args.model, rows, args.tokens, device, dtype)),
        (
            "ours",
            lambda: run_ours(args.model, rows, args.tokens, args.micro_batch, not args.no_checkpointing, device, dtype),
        ),
    ):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = run()
        result["val_loss"] = mean_loss(result.pop("model"), val, 4, tokenizer.pad_token_id, device, amp)
        result["tokens_per_s"] = result["tokens"] / result["seconds"]
        result["peak_mb"] = peak_memory_mb(device)
        results[name] = result
        print(
            f"{name:8s} {result['tokens']:7,} tokens in {result['seconds']:6.1f} s = {result['tokens_per_s']:8.1f} "
            f"tokens/s, peak {result['peak_mb']:,.0f} MB, val loss {result['val_loss']:.4f}"
        )
    ratio = results["ours"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (peak = process max RSS)"
    print(f"device {device_name}, dtype {dtype}; ours / baseline tokens/s = {ratio:.2f}x")


if __name__ == "__main__":
    main()
