"""Score the base and the tuned model on the test split: BLEU, ROUGE-1/2/L, reference perplexity.

    python stages/evaluate.py data/split/test.parquet models/base models/adapter metrics

Both models decode the same prompts with the same settings. The base is the original model;
the tuned model is the adapter merged into the base as training saw it (quantized, then
dequantized), so it decodes like the training-time model at plain-model speed.
Writes metrics/eval.json (base, tuned, delta: corpus BLEU, mean ROUGE, perplexity), the
per-sample scores of both models in metrics/eval_scores.jsonl (what the report's intervals
resample), a few texts in metrics/eval_samples.jsonl, and metrics/eval_run.json (experiment
name, MLflow run and its link) for the PR report.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch

from lorapipe.generation import generate_texts
from lorapipe.modeling import load_model, load_tokenizer, load_tuned_model, pick_device, pick_dtype
from lorapipe.outputs import sha256_of, write_json
from lorapipe.packing import IGNORE, collate, example_labels
from lorapipe.params import check_params_unchanged, load_params
from lorapipe.prompt import build_prompts, encode_examples, truncate_titles
from lorapipe.samples import RUN, SAMPLES, SCORES, write_sample_files
from lorapipe.scoring import corpus_scores, sample_scores
from lorapipe.stage import StageError, log, run_stage
from lorapipe.tables import read_text_table
from lorapipe.tracking import ADAPTER_TAG, Tracker, flat_params


@torch.no_grad()
def reference_losses(model, tokenizer, titles, contents, tok_params, batch, device) -> list[tuple[float, int]]:
    """Per sample: the mean loss of the reference description's tokens given its prompt, and their count."""
    model.eval()
    examples = encode_examples(tokenizer, titles, contents, tok_params.prompt_tokens, tok_params.response_tokens)
    rows = [
        {"input_ids": ex.input_ids, "labels": example_labels(ex, True), "position_ids": range(len(ex.input_ids))}
        for ex in examples
    ]
    losses = []
    for i in range(0, len(rows), batch):
        b = collate(rows[i : i + batch], tokenizer.pad_token_id)
        logits = model(input_ids=b["input_ids"].to(device), position_ids=b["position_ids"].to(device)).logits
        labels = b["labels"][:, 1:].to(device)
        token_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
        )
        counts = (labels != IGNORE).sum(dim=1)
        losses += [(float(s) / max(int(n), 1), int(n)) for s, n in zip(token_loss.sum(dim=1), counts, strict=True)]
    return losses


def mlflow_run_url(run_id: str | None) -> str | None:
    """A link to the run on an http(s) tracking server (credentials stripped); None for a local store."""
    uri = urlsplit(os.environ.get("MLFLOW_TRACKING_URI", ""))
    if not run_id or uri.scheme not in ("http", "https"):
        return None
    server = uri._replace(netloc=uri.netloc.rpartition("@")[2], query="", fragment="").geturl()
    return f"{server.rstrip('/')}/#/runs/{run_id}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("metrics", type=Path, help="folder for eval.json and the eval_* files")
    args = parser.parse_args()
    params, tok_params = load_params("eval"), load_params("tokenize")
    if not (args.adapter / "adapter_config.json").is_file():
        raise StageError(f"{args.adapter}: no adapter_config.json; run the train stage first (dvc repro train)")

    table = read_text_table(args.test)
    rng = np.random.default_rng(params.seed)
    rows = np.sort(rng.permutation(table.num_rows)[: params.max_samples])
    titles = [table["title"][int(i)].as_py() for i in rows]
    references = [table["content"][int(i)].as_py() for i in rows]

    torch.manual_seed(params.seed)
    device = pick_device()
    dtype = pick_dtype("auto", device)
    tokenizer = load_tokenizer(args.model)
    prompts = build_prompts(tokenizer, [t for t, _ in truncate_titles(tokenizer, titles, tok_params.prompt_tokens)])
    model = load_model(args.model, dtype, device)

    results, outputs, per_sample, seconds = {}, {}, {}, {}
    for name in ("base", "tuned"):
        if name == "tuned":
            del model
            model = load_tuned_model(args.model, args.adapter, dtype, device)
        started = time.perf_counter()
        outputs[name] = generate_texts(model, tokenizer, prompts, params, desc=f"generate {name}")
        seconds[name] = time.perf_counter() - started
        per_sample[name] = sample_scores(outputs[name], references)
        losses = reference_losses(model, tokenizer, titles, references, tok_params, params.batch_size, device)
        for sample, (loss, tokens) in zip(per_sample[name], losses, strict=True):
            sample.update(loss=loss, tokens=tokens)
        scores = corpus_scores(per_sample[name])
        scores["perplexity"] = math.exp(sum(loss * n for loss, n in losses) / max(sum(n for _, n in losses), 1))
        results[name] = {k: round(v, 4) for k, v in scores.items()}
        log.info(f"evaluate {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name].items()))

    # The training run of this very adapter (found by its hash, so no run id sits in the adapter).
    tracker = Tracker("evaluate", find_tag=(ADAPTER_TAG, sha256_of(args.adapter / "adapter_model.safetensors")))
    tracker.log_params(flat_params({"eval": params}))
    new_tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs["tuned"])
    summary = {
        **results,
        "delta": {k: round(results["tuned"][k] - results["base"][k], 4) for k in results["base"]},
        "samples": len(titles),
        "generation_tokens_per_s": round(new_tokens / max(seconds["tuned"], 1e-9), 1),
    }
    check_params_unchanged()
    write_json(args.metrics / "eval.json", summary)
    write_sample_files(args.metrics, titles, references, outputs, per_sample, params.report_samples)
    run = {"experiment": os.environ.get("DVC_EXP_NAME") or None, "mlflow_run_id": tracker.run_id}
    write_json(args.metrics / RUN.name, {**run, "mlflow_run_url": mlflow_run_url(tracker.run_id)})
    flat = {f"{model}.{k}": v for model in ("base", "tuned", "delta") for k, v in summary[model].items()}
    tracker.log_metrics({**flat, "eval.samples": len(titles)})
    tracker.log_artifacts([args.metrics / name for name in ("eval.json", SAMPLES.name, SCORES.name)], "metrics")
    tracker.finish()


if __name__ == "__main__":
    run_stage(main)
