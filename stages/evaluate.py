"""Score the base and the tuned model on the test split: BLEU, ROUGE-1/2/L, reference perplexity.

    python stages/evaluate.py data/split/test.parquet models/base models/adapter metrics

Both models decode the same prompts with the same settings. The base is the original model;
the tuned model is the adapter merged into the base as training saw it (quantized, then
dequantized), so it decodes like the training-time model at plain-model speed.
Writes metrics/eval.json (base, tuned, delta) and metrics/eval_samples.jsonl (title,
reference, base, tuned) for the PR report.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import orjson
import torch

from lorapipe.generation import generate_texts
from lorapipe.modeling import load_model, load_tokenizer, load_tuned_model, pick_device, pick_dtype
from lorapipe.outputs import atomic_path, sha256_of, write_json
from lorapipe.packing import pack_examples
from lorapipe.params import check_params_unchanged, load_params
from lorapipe.perplexity import mean_loss
from lorapipe.prompt import build_prompt, encode_example, truncate_title
from lorapipe.scoring import text_scores
from lorapipe.stage import StageError, log, run_stage
from lorapipe.tables import read_text_table
from lorapipe.tracking import ADAPTER_TAG, Tracker, flat_params


def reference_perplexity(model, tokenizer, titles, contents, tok_params, batch, device) -> float:
    """exp(mean loss of the reference descriptions given their prompts)."""
    examples = [
        encode_example(tokenizer, t, c, tok_params.prompt_tokens, tok_params.response_tokens)
        for t, c in zip(titles, contents, strict=True)
    ]
    longest = max(len(ex.input_ids) for ex in examples)
    rows = [r.__dict__ for r in pack_examples(examples, longest, completion_only=True)]
    return math.exp(mean_loss(model, rows, batch, tokenizer.pad_token_id, device, nullcontext))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("metrics", type=Path, help="folder for eval.json and eval_samples.jsonl")
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
    prompts = [build_prompt(tokenizer, truncate_title(tokenizer, t, tok_params.prompt_tokens)[0]) for t in titles]
    model = load_model(args.model, dtype, device)

    results, outputs, seconds = {}, {}, {}
    for name in ("base", "tuned"):
        if name == "tuned":
            del model
            model = load_tuned_model(args.model, args.adapter, dtype, device)
        started = time.perf_counter()
        outputs[name] = generate_texts(model, tokenizer, prompts, params, desc=f"generate {name}")
        seconds[name] = time.perf_counter() - started
        scores = text_scores(outputs[name], references)
        scores["perplexity"] = reference_perplexity(
            model, tokenizer, titles, references, tok_params, params.batch_size, device
        )
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
    with atomic_path(args.metrics / "eval_samples.jsonl") as tmp, open(tmp, "wb") as f:
        for i in range(min(params.report_samples, len(titles))):
            sample = {"title": titles[i], "reference": references[i], "base": outputs["base"][i]}
            f.write(orjson.dumps({**sample, "tuned": outputs["tuned"][i]}) + b"\n")
    flat = {f"{model}.{k}": v for model in ("base", "tuned", "delta") for k, v in summary[model].items()}
    tracker.log_metrics({**flat, "eval.samples": len(titles)})
    tracker.log_artifacts([args.metrics / "eval.json", args.metrics / "eval_samples.jsonl"], "metrics")
    tracker.finish()


if __name__ == "__main__":
    run_stage(main)
