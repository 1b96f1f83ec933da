"""Clean raw gzip JSON lines into a (title, content) Parquet table, in one streaming pass.

    python stages/clean.py data/raw/trn.json.gz data/clean.parquet data/clean_rejects.jsonl metrics/clean.json

Malformed lines never crash the stage: they are counted per reason, and the first few of
each kind are written to the rejects file.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from lorapipe.cleaning import Reason, clean_chunk
from lorapipe.outputs import atomic_path, write_json
from lorapipe.params import CleanParams, check_params_unchanged, load_params
from lorapipe.stage import StageError, log, run_stage
from lorapipe.tables import TEXT_SCHEMA, iter_gzip_chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("rejects", type=Path)
    parser.add_argument("metrics", type=Path)
    args = parser.parse_args()
    params: CleanParams = load_params("clean")

    started = time.perf_counter()
    dropped: Counter[str] = Counter()
    examples: list[dict] = []
    read = kept = 0
    with atomic_path(args.out) as tmp:
        writer = pq.ParquetWriter(tmp, TEXT_SCHEMA, compression="zstd")
        for lines in iter_gzip_chunks(args.raw, desc="clean"):
            chunk = clean_chunk(lines, params)
            writer.write_table(chunk.kept)
            kept += chunk.kept.num_rows
            for i, reason in chunk.rejected:
                dropped[reason] += 1
                if dropped[reason] <= params.rejects_per_reason:
                    text = lines[i][:300].decode("utf-8", "replace")
                    examples.append({"line": read + i + 1, "reason": reason, "text": text})
            read += len(lines)
        writer.close()
        _write_rejects(args.rejects, examples)  # first, so a failing run still shows examples
        malformed = sum(dropped[r] for r in Reason.MALFORMED)
        if read and malformed / read > params.max_bad_fraction:
            raise StageError(
                f"{args.raw}: {malformed:,} of {read:,} lines are malformed, over clean.max_bad_fraction "
                f"{params.max_bad_fraction:g}; is this really gzip JSON lines with '{params.title_field}' "
                f"and '{params.content_field}'? Examples: {args.rejects}"
            )
        if kept == 0:
            raise StageError(f"{args.raw}: no record left after cleaning ({dict(dropped)}); check clean.* limits")
        check_params_unchanged()

    write_json(
        args.metrics,
        {
            "records_read": read,
            "kept": kept,
            "dropped": dict(sorted(dropped.items())),
            "malformed": malformed,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    log.info(f"clean: read {read:,} lines, kept {kept:,}, dropped {sum(dropped.values()):,}")


def _write_rejects(path: Path, examples: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for example in examples:
            f.write(orjson.dumps(example) + b"\n")


if __name__ == "__main__":
    run_stage(main)
