"""Split the sample into train, validation and test; no product title lands in two splits.

Paths: the command line of dvc.yaml's `split` stage (`--help` names each).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.outputs import atomic_dir, atomic_path, write_json
from lorapipe.core.params import SplitParams, check_params_unchanged, load_params
from lorapipe.core.record_ids import record_id
from lorapipe.data.data_files import read_text_table, write_table
from lorapipe.data.row_selection import split_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", type=Path)
    parser.add_argument("out", type=Path, help="folder for train/val/test.parquet")
    parser.add_argument("metrics", type=Path)
    parser.add_argument("test_ids", type=Path, help="the test records' ids, sorted, one a line")
    args = parser.parse_args()
    params = load_params(SplitParams)

    table = read_text_table(args.sample)
    parts = split_indices(table["title"].to_pylist(), params.test_size, params.val_size, params.seed)
    if len(parts["train"]) == 0 or len(parts["test"]) == 0:
        raise UserError(
            f"{args.sample}: {table.num_rows} rows with split.test_size {params.test_size:g} leave no "
            f"{'train' if len(parts['test']) else 'test'} row; raise sample.size or change split.test_size"
        )

    check_params_unchanged()
    with atomic_dir(args.out) as tmp:
        for name, rows in parts.items():
            write_table(table.take(rows), tmp / f"{name}.parquet")
    test = table.take(parts["test"])
    ids = sorted(map(record_id, test["title"].to_pylist(), test["content"].to_pylist()))
    with atomic_path(args.test_ids) as tmp:
        tmp.write_text("".join(f"{record}\n" for record in ids))
    sizes = {name: len(rows) for name, rows in parts.items()}
    write_json(args.metrics, sizes)
    log.info("split: " + ", ".join(f"{name} {size:,}" for name, size in sizes.items()))


if __name__ == "__main__":
    run_cli(main)
