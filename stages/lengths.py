"""Measure prompt and description token lengths of the train split against the tokenize budgets.

Paths: the command line of dvc.yaml's `lengths` stage (`--help` names each).

The evidence behind `tokenize.prompt_tokens` and `tokenize.response_tokens`: with the base model's
tokenizer, the percentiles (50/90/95/99/max) of each field, the share of examples each budget cuts,
the budgets that would keep 95% and 99% of them whole, and how full the packed `seq_len` rows are.
Titles are measured as prompts (with the template, as training sees them); the prompt budget caps
the title inside the template. One histogram CSV per field for `dvc plots`, the budget marked.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.outputs import write_json
from lorapipe.core.params import TokenizeParams, check_params_unchanged, load_params
from lorapipe.data.data_files import read_text_table
from lorapipe.data.lengths import (
    histogram_rows,
    length_summary,
    packed_examples,
    packing_summary,
    prompt_lengths,
    token_lengths,
)
from lorapipe.data.prompt import use_tokenizer_threads
from lorapipe.model.modeling import load_tokenizer
from lorapipe.train.plots import write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", type=Path, help="the train split (title, content)")
    parser.add_argument("model", type=Path, help="base model folder (for its tokenizer)")
    parser.add_argument("packed", type=Path, help="the packed train rows of the tokenize stage")
    parser.add_argument("metrics", type=Path)
    parser.add_argument("prompt_plot", type=Path, help="histogram CSV of prompt lengths")
    parser.add_argument("description_plot", type=Path, help="histogram CSV of description lengths")
    args = parser.parse_args()
    use_tokenizer_threads()
    params = load_params(TokenizeParams)

    table = read_text_table(args.train)
    if table.num_rows == 0:
        raise UserError(f"{args.train}: no rows to measure; raise sample.size")
    if not args.packed.is_file():
        raise UserError(f"{args.packed}: not found; run the tokenize stage first (dvc repro tokenize)")
    tokenizer = load_tokenizer(args.model)
    titles, contents = table["title"].to_pylist(), table["content"].to_pylist()

    started, cpu_started = time.perf_counter(), time.process_time()
    title_tokens = token_lengths(tokenizer, titles)
    prompt_tokens = prompt_lengths(tokenizer, titles)
    description_tokens = token_lengths(tokenizer, contents)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    # The template's own tokens: the prompt budget caps the title, so the prompt is cut past template + budget.
    template_tokens = int(np.median(prompt_tokens - title_tokens))
    packed = pq.read_table(args.packed, columns=["input_ids", "position_ids"])
    row_lengths = pc.list_value_length(packed["input_ids"]).to_numpy()
    positions = pc.list_flatten(packed["position_ids"]).to_numpy()
    metrics = {
        "examples": table.num_rows,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # all threads; on a shared machine wall time varies, this less
        "examples_per_s": round(table.num_rows / max(seconds, 1e-9)),
        "prompt": {
            **length_summary(prompt_tokens),
            "template_tokens": template_tokens,
            # the budget applies to the title: its cut share and coverage budgets are in title tokens
            "title": length_summary(title_tokens, params.prompt_tokens),
        },
        "description": length_summary(description_tokens, params.response_tokens),
        "packing": packing_summary(row_lengths, packed_examples(positions), params.seq_len),
    }
    check_params_unchanged()
    write_csv(args.prompt_plot, histogram_rows(prompt_tokens, template_tokens + params.prompt_tokens))
    write_csv(args.description_plot, histogram_rows(description_tokens, params.response_tokens))
    write_json(args.metrics, metrics)
    title, description = metrics["prompt"]["title"], metrics["description"]
    log.info(
        f"lengths: {table.num_rows:,} examples in {seconds:.1f} s; tokenize.prompt_tokens {params.prompt_tokens} "
        f"cuts {title['cut_share']:.1%} of titles (95%: {title['budget_for_95pct']}, 99%: "
        f"{title['budget_for_99pct']}), tokenize.response_tokens {params.response_tokens} cuts "
        f"{description['cut_share']:.1%} of descriptions (95%: {description['budget_for_95pct']}, 99%: "
        f"{description['budget_for_99pct']}); packed rows {metrics['packing']['fill_mean']:.1%} full"
    )


if __name__ == "__main__":
    run_cli(main)
