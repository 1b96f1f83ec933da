"""Drop duplicate products and draw a seeded sample of `sample.size` records.

Paths: the command line of dvc.yaml's `sample` stage (`--help` names each).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lorapipe.core.cli import log, run_cli
from lorapipe.core.outputs import atomic_path, write_json
from lorapipe.core.params import SampleParams, check_params_unchanged, load_params
from lorapipe.data.data_files import open_text_table, write_table
from lorapipe.data.row_selection import dedupe_table, sample_indices, take_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("metrics", type=Path)
    args = parser.parse_args()
    params = load_params(SampleParams)

    # Descriptions are never all in memory: dedup reads titles, and descriptions a row group at a time.
    table = open_text_table(args.clean)
    dedup = dedupe_table(table)
    unique = len(dedup.keep)
    rows = sample_indices(unique, params.size, params.seed)
    sample = take_rows(table, np.asarray(dedup.keep, dtype=np.int64)[rows])
    if sample.num_rows < params.size:
        log.info(f"sample: only {sample.num_rows:,} unique records, fewer than sample.size {params.size:,}; kept all")
    records_in = table.metadata.num_rows

    check_params_unchanged()
    with atomic_path(args.out) as tmp:
        write_table(sample, tmp)
    write_json(
        args.metrics,
        {
            "records_in": records_in,
            "exact_duplicates": dedup.exact_duplicates,
            "title_duplicates": dedup.title_duplicates,
            "unique": unique,
            "requested": params.size,
            "sampled": sample.num_rows,
            "short_of_requested": sample.num_rows < params.size,
        },
    )
    log.info(
        f"sample: {records_in:,} in, {dedup.exact_duplicates + dedup.title_duplicates:,} duplicates, "
        f"{sample.num_rows:,} sampled"
    )


if __name__ == "__main__":
    run_cli(main)
