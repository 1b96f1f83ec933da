"""Clean raw gzip JSON lines into a (title, content) Parquet table, in one streaming pass.

Paths: the command line of dvc.yaml's `clean` stage (`--help` names each).

Malformed lines never crash the stage: they are counted per reason, and the first few of
each kind are written to the rejects file.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.outputs import atomic_path, write_json, write_jsonl
from lorapipe.core.params import CleanParams, check_params_unchanged, load_params
from lorapipe.data.clean_rules import REASONS, NearLimit, Reason
from lorapipe.data.cleaning import CleanedChunk, clean_chunks, nearest_limits
from lorapipe.data.data_files import TEXT_SCHEMA, iter_gzip_chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("rejects", type=Path)
    parser.add_argument("metrics", type=Path)
    parser.add_argument("near_limits", type=Path, help="JSON lines: the records nearest each length limit")
    args = parser.parse_args()
    params = load_params(CleanParams)

    started = time.perf_counter()
    counts = np.zeros(len(REASONS), dtype=np.int64)
    examples: list[dict] = []
    near: list[NearLimit] = []
    read = kept = 0
    with atomic_path(args.out) as tmp:
        writer = pq.ParquetWriter(tmp, TEXT_SCHEMA, compression="zstd")
        for chunk in clean_chunks(iter_gzip_chunks(args.raw, desc="clean"), params, writer.write_table):
            kept += chunk.kept.num_rows
            examples += _examples(chunk, read, counts, params.rejects_per_reason)
            near = nearest_limits([*near, *(dataclasses.replace(r, line=read + r.line) for r in chunk.near_limits)])
            counts += np.bincount(chunk.rejected_why, minlength=len(REASONS))
            read += len(chunk.lines)
        writer.close()
        dropped = {reason: int(n) for reason, n in zip(REASONS, counts, strict=True) if n}
        write_jsonl(args.rejects, examples)  # first, so a failing run still shows examples
        malformed = sum(dropped.get(r, 0) for r in Reason.MALFORMED)
        if read and malformed / read > params.max_bad_fraction:
            raise UserError(
                f"{args.raw}: {malformed:,} of {read:,} lines are malformed, over clean.max_bad_fraction "
                f"{params.max_bad_fraction:g}; is this really gzip JSON lines with '{params.title_field}' "
                f"and '{params.content_field}'? Examples: {args.rejects}"
            )
        if kept == 0:
            raise UserError(f"{args.raw}: no record left after cleaning ({dict(dropped)}); check clean.* limits")
        check_params_unchanged()

    write_jsonl(args.near_limits, [record.to_json() for record in near])
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


def _examples(chunk: CleanedChunk, first_line: int, counts: np.ndarray, per_reason: int) -> list[dict]:
    """The chunk's dropped lines that are among the first `per_reason` of their kind, in line order."""
    picked: list[tuple[int, int]] = []
    for why in np.unique(chunk.rejected_why).tolist():
        wanted = per_reason - int(counts[why])
        if wanted > 0:
            picked += [(i, why) for i in chunk.rejected_at[chunk.rejected_why == why][:wanted].tolist()]
    return [
        {"line": first_line + i + 1, "reason": REASONS[why], "text": chunk.lines[i][:300].decode("utf-8", "replace")}
        for i, why in sorted(picked)
    ]


if __name__ == "__main__":
    run_cli(main)
