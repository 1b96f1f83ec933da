"""Drop duplicate products and draw a seeded sample of `sample.size` records.

python stages/sample.py data/clean.parquet data/sample.parquet metrics/sample.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lorapipe.dataset import dedupe, sample_indices
from lorapipe.outputs import atomic_path, write_json
from lorapipe.params import SampleParams, check_params_unchanged, load_params
from lorapipe.stage import log, run_stage
from lorapipe.tables import read_text_table, write_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("metrics", type=Path)
    args = parser.parse_args()
    params: SampleParams = load_params("sample")

    table = read_text_table(args.clean)
    # Descriptions stream through chunk by chunk: 1.3M of them as Python strings would take GBs.
    contents = (text for chunk in table["content"].chunks for text in chunk.to_pylist())
    dedup = dedupe(table["title"].to_pylist(), contents)
    unique = len(dedup.keep)
    rows = sample_indices(unique, params.size, params.seed)
    sample = table.take(np.asarray(dedup.keep)[rows])  # one take: no copy of all unique rows
    if sample.num_rows < params.size:
        log.info(f"sample: only {sample.num_rows:,} unique records, fewer than sample.size {params.size:,}; kept all")

    check_params_unchanged()
    with atomic_path(args.out) as tmp:
        write_table(sample, tmp)
    write_json(
        args.metrics,
        {
            "records_in": table.num_rows,
            "exact_duplicates": dedup.exact_duplicates,
            "title_duplicates": dedup.title_duplicates,
            "unique": unique,
            "requested": params.size,
            "sampled": sample.num_rows,
            "short_of_requested": sample.num_rows < params.size,
        },
    )
    log.info(
        f"sample: {table.num_rows:,} in, {dedup.exact_duplicates + dedup.title_duplicates:,} duplicates, "
        f"{sample.num_rows:,} sampled"
    )


if __name__ == "__main__":
    run_stage(main)
