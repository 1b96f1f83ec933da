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

from lorapipe.cleaning import Reason, Rejected, parse_line
from lorapipe.outputs import atomic_path, write_json
from lorapipe.params import CleanParams, check_params_unchanged, load_params
from lorapipe.stage import StageError, log, run_stage
from lorapipe.tables import TextTableWriter, iter_gzip_lines


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
    read = 0
    with atomic_path(args.out) as tmp:
        writer = TextTableWriter(tmp)
        for read, line in enumerate(iter_gzip_lines(args.raw, desc="clean"), start=1):
            result = parse_line(line, params)
            if isinstance(result, Rejected):
                dropped[result.reason] += 1
                if dropped[result.reason] <= params.rejects_per_reason:
                    text = line[:300].decode("utf-8", "replace").rstrip("\n")
                    examples.append({"line": read, "reason": result.reason, "text": text})
                continue
            writer.append(*result)
        writer.close()
        _write_rejects(args.rejects, examples)  # first, so a failing run still shows examples
        malformed = sum(dropped[r] for r in Reason.MALFORMED)
        if read and malformed / read > params.max_bad_fraction:
            raise StageError(
                f"{args.raw}: {malformed:,} of {read:,} lines are malformed, over clean.max_bad_fraction "
                f"{params.max_bad_fraction:g}; is this really gzip JSON lines with '{params.title_field}' "
                f"and '{params.content_field}'? Examples: {args.rejects}"
            )
        if writer.rows == 0:
            raise StageError(f"{args.raw}: no record left after cleaning ({dict(dropped)}); check clean.* limits")
        check_params_unchanged()

    write_json(
        args.metrics,
        {
            "records_read": read,
            "kept": writer.rows,
            "dropped": dict(sorted(dropped.items())),
            "malformed": malformed,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    log.info(f"clean: read {read:,} lines, kept {writer.rows:,}, dropped {sum(dropped.values()):,}")


def _write_rejects(path: Path, examples: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for example in examples:
            f.write(orjson.dumps(example) + b"\n")


if __name__ == "__main__":
    run_stage(main)
