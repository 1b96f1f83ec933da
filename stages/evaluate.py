"""Score the base and the tuned model on the test split: BLEU, ROUGE-1/2/L, perplexity, output health.

Paths: the command line of dvc.yaml's `evaluate` stage (`--help` names each).

Both models decode the same prompts with the same settings. The base is the original model,
decoded once by the generate_base stage: its outputs file is checked against the samples,
prompts, params and base weights scored here, and refused if it was made for others. The tuned
model is the trained adapter merged into the base as training saw it (quantized, then dequantized),
so it decodes like the training-time model at plain-model speed; with lora.method full it is the
trained model itself. Writes the scores (base, tuned, delta: corpus BLEU, mean ROUGE, perplexity,
and beside them the output health of lorapipe.eval.output_health: runaway, repetition, distinct-2,
length ratio, unsupported figures, title echo), a few texts, the per-sample scores of both models
(what the report's intervals resample), and the run record (experiment name, MLflow run and its
link) for the PR report.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlsplit

from lorapipe.core.cli import log, run_cli
from lorapipe.core.credentials import redact
from lorapipe.core.outputs import sha256_of, write_json
from lorapipe.core.params import EvalParams, OpsParams, TokenizeParams, check_params_unchanged, load_params
from lorapipe.core.vcs import DVC_EXP_NAME
from lorapipe.train.training_record import load_training_record, weight_files


def mlflow_run_url(mlflow_run_id: str | None) -> str | None:
    """A link to the run on an http(s) tracking server (credentials stripped); None for a local store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not mlflow_run_id or urlsplit(uri).scheme not in ("http", "https"):
        return None
    return f"{redact(uri).rstrip('/')}/#/runs/{mlflow_run_id}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("base_outputs", type=Path, help="the base model's outputs (generate_base stage)")
    parser.add_argument("trained", type=Path, help="the train stage's adapter, or whole model (lora.method full)")
    parser.add_argument("summary", type=Path, help="JSON: the headline scores (a DVC metric)")
    parser.add_argument("details", type=Path, help="JSON: base, tuned and delta: every score, output health")
    parser.add_argument("samples", type=Path, help="JSON lines: the first eval.report_samples texts")
    parser.add_argument("scores", type=Path, help="JSON lines: every sample's texts and scores")
    parser.add_argument("eval_run", type=Path, help="JSON: experiment name and MLflow run")
    args = parser.parse_args()
    params, tok_params, ops = load_params(EvalParams), load_params(TokenizeParams), load_params(OpsParams)
    record = load_training_record(args.trained)
    # Imported once the params and the training record are valid: a mistake is one line at once, not after
    # the seconds to a minute that torch and transformers take to load.
    from lorapipe.core.metric_files import EVAL_HEADLINE, write_numbers
    from lorapipe.eval.eval_files import write_sample_files
    from lorapipe.eval.evaluation import (
        base_settings,
        decode_and_measure,
        load_eval_inputs,
        read_base_outputs,
        weights_sha256,
    )
    from lorapipe.eval.scoring import score_models
    from lorapipe.model.modeling import load_tuned_model
    from lorapipe.train.tracking import ADAPTER_TAG, Tracker, tracking_wanted

    inputs = load_eval_inputs(args.test, args.model, params, tok_params)
    settings, weights = base_settings(params, tok_params), weights_sha256(args.model)
    base, base_dtype = read_base_outputs(args.base_outputs, settings, weights, inputs.fields())
    if base_dtype != str(inputs.dtype):  # another device decoded the base (a run-cache or a remote's copy)
        log.warning(
            f"warning: {args.base_outputs} was decoded in {base_dtype}, the tuned model decodes in {inputs.dtype}"
        )

    model = load_tuned_model(args.model, args.trained, record.lora.method, record.quant, inputs.dtype, inputs.device)
    tuned = decode_and_measure(model, inputs, params, tok_params, desc="generate tuned")
    outputs = {"base": base, "tuned": tuned.outputs}
    per_sample, results = score_models(inputs.titles, inputs.references, outputs)
    for name in outputs:
        log.info(f"evaluate {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name].items()))

    # The training run of these very weights (found by their hash, so no run id sits in the trained folder).
    trained_weights = args.trained / weight_files(record.lora.method)[1]
    tracker = Tracker(
        "evaluate", find_tag=(ADAPTER_TAG, sha256_of(trained_weights)), enabled=tracking_wanted(ops.mlflow)
    )
    tracker.log_params({"eval": params})
    summary = {**results, "samples": len(inputs.titles), "generation_tokens_per_s": tuned.tokens_per_s}
    check_params_unchanged()
    write_numbers(args.summary, args.details, summary, EVAL_HEADLINE)
    texts = {name: outputs[name].texts for name in outputs}
    write_sample_files(
        args.samples, args.scores, inputs.titles, inputs.references, texts, per_sample, params.report_samples
    )
    eval_run = {"experiment": os.environ.get(DVC_EXP_NAME) or None, "mlflow_run_id": tracker.mlflow_run_id}
    write_json(args.eval_run, {**eval_run, "mlflow_run_url": mlflow_run_url(tracker.mlflow_run_id)})
    by_model = {model: summary[model] for model in ("base", "tuned", "delta")}  # logged as base.bleu, ...
    tracker.log_metrics({**by_model, "eval.samples": summary["samples"]})
    tracker.log_artifacts([args.details, args.samples, args.scores], "metrics")
    tracker.finish()


if __name__ == "__main__":
    run_cli(main)
