"""Tokenize train/val within the token budgets and pack them into seq_len rows.

Paths: the command line of dvc.yaml's `tokenize` stage (`--help` names each).

(The `tokenize` stage's script is not called tokenize.py: that name would shadow Python's
own `tokenize` module for every script in stages/.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorapipe.core.cli import UserError, log, progress, run_cli
from lorapipe.core.outputs import atomic_dir, write_json
from lorapipe.core.params import TokenizeParams, check_params_unchanged, load_params
from lorapipe.data.data_files import read_text_table
from lorapipe.data.packing import IGNORE, pack_examples, write_rows
from lorapipe.data.prompt import encode_examples, use_tokenizer_threads
from lorapipe.model.modeling import load_tokenizer

BATCH = 4096  # examples per call to the tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path, help="folder with train.parquet and val.parquet")
    parser.add_argument("model", type=Path, help="base model folder (for its tokenizer)")
    parser.add_argument("out", type=Path)
    parser.add_argument("metrics", type=Path)
    args = parser.parse_args()
    use_tokenizer_threads()
    params = load_params(TokenizeParams)

    tokenizer = load_tokenizer(args.model)
    metrics = {}
    with atomic_dir(args.out) as tmp:
        for part in ("train", "val"):
            table = read_text_table(args.split / f"{part}.parquet")
            titles, contents = table["title"].to_pylist(), table["content"].to_pylist()
            examples = []
            for start in progress(range(0, len(titles), BATCH), desc=f"tokenize {part}", unit="batch"):
                batch = slice(start, start + BATCH)
                examples += encode_examples(
                    tokenizer, titles[batch], contents[batch], params.prompt_tokens, params.response_tokens
                )
            too_long = sum(len(ex.input_ids) > params.seq_len for ex in examples)
            if too_long:
                raise UserError(
                    f"params.yaml: {too_long} {part} examples exceed tokenize.seq_len {params.seq_len}; "
                    "raise it above prompt_tokens + response_tokens + the template's tokens"
                )
            rows = pack_examples(examples, params.seq_len, params.completion_only)
            write_rows(rows, tmp / f"{part}.parquet")
            tokens = sum(len(ex.input_ids) for ex in examples)
            metrics[part] = {
                "examples": len(examples),
                "tokens": tokens,
                "trained_tokens": sum(sum(label != IGNORE for label in r.labels) for r in rows),
                "prompt_truncated": sum(ex.prompt_truncated for ex in examples),
                "response_truncated": sum(ex.response_truncated for ex in examples),
                "rows": len(rows),
                "packing_efficiency": round(tokens / (len(rows) * params.seq_len), 4) if rows else 0.0,
            }
            log.info(
                f"tokenize {part}: {len(examples):,} examples, {tokens:,} tokens in {len(rows):,} rows "
                f"of {params.seq_len} ({metrics[part]['packing_efficiency']:.1%} full)"
            )
        check_params_unchanged()
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_cli(main)
