"""Decode the test prompts with the base model once, for every experiment's evaluate stage.

Paths: the command line of dvc.yaml's `generate_base` stage (`--help` names each).

The base model's texts and reference losses depend only on the base model, the test split and
the decoding params (lorapipe.evaluation.BASE_SETTINGS), not on lora/train/quant: this stage
stays cached while `dvc exp run -S lora.r=8` re-runs train and evaluate, and evaluate decodes
only the tuned model. It picks the same samples, prompts and decoding evaluate used to, so the
base scores are those evaluate computed itself before this stage existed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lorapipe.cli import log, run_cli
from lorapipe.evaluation import (
    base_settings,
    decode_and_measure,
    eval_prompts,
    select_samples,
    weights_sha256,
    write_base_outputs,
)
from lorapipe.modeling import load_model, load_tokenizer, pick_device, pick_dtype
from lorapipe.params import EvalParams, TokenizeParams, check_params_unchanged, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path, help="the base outputs file evaluate reads")
    args = parser.parse_args()
    params, tok_params = load_params(EvalParams), load_params(TokenizeParams)
    settings = base_settings(params, tok_params)
    log.info("generate_base: " + ", ".join(f"{k} {v}" for k, v in settings.items()))

    titles, references = select_samples(args.test, params.max_samples, params.seed)
    torch.manual_seed(params.seed)  # as evaluate seeded before decoding the base (for eval.do_sample)
    device = pick_device()
    dtype = pick_dtype("auto", device)
    tokenizer = load_tokenizer(args.model)
    prompts, prompt_ids = eval_prompts(tokenizer, titles, tok_params.prompt_tokens)
    model = load_model(args.model, dtype, device)
    texts, losses, seconds = decode_and_measure(
        model, tokenizer, prompt_ids, titles, references, params, tok_params, desc="generate base"
    )
    log.info(f"generate_base: {len(texts):,} samples decoded in {seconds:.1f} s on {device.type} ({dtype})")

    check_params_unchanged()
    samples = {"title": titles, "reference": references, "prompt": prompts}
    write_base_outputs(args.out, settings, weights_sha256(args.model), str(dtype), samples, texts, losses)


if __name__ == "__main__":
    run_cli(main)
