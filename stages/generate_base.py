"""Decode the test prompts with the base model once, for every experiment's evaluate stage.

Paths: the command line of dvc.yaml's `generate_base` stage (`--help` names each).

The base model's texts and reference losses depend only on the base model, the test split and
the decoding params (lorapipe.eval.evaluation.BASE_SETTINGS), not on lora/train/quant: this stage
stays cached while `dvc exp run -S lora.r=8` re-runs train and evaluate, and evaluate decodes
only the tuned model. It picks the same samples, prompts and decoding evaluate used to, so the
base scores are those evaluate computed itself before this stage existed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorapipe.core.cli import log, run_cli
from lorapipe.core.params import EvalParams, TokenizeParams, check_params_unchanged, load_params
from lorapipe.eval.evaluation import (
    base_settings,
    decode_and_measure,
    load_eval_inputs,
    weights_sha256,
    write_base_outputs,
)
from lorapipe.model.modeling import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path, help="the base outputs file evaluate reads")
    args = parser.parse_args()
    params, tok_params = load_params(EvalParams), load_params(TokenizeParams)
    settings = base_settings(params, tok_params)
    log.info("generate_base: " + ", ".join(f"{k} {v}" for k, v in settings.items()))

    inputs = load_eval_inputs(args.test, args.model, params, tok_params)
    model = load_model(args.model, inputs.dtype, inputs.device)
    base = decode_and_measure(model, inputs, params, tok_params, desc="generate base")
    log.info(
        f"generate_base: {len(base.outputs.texts):,} samples decoded in {base.seconds:.1f} s "
        f"({base.tokens_per_s} tokens/s) on {inputs.device.type} ({inputs.dtype})"
    )

    check_params_unchanged()
    weights, dtype = weights_sha256(args.model), str(inputs.dtype)
    write_base_outputs(args.out, settings, weights, dtype, inputs.fields(), base.outputs)


if __name__ == "__main__":
    run_cli(main)
