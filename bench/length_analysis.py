"""Time the lengths stage on a 40k-example train split, next to the tokenize stage on the same rows.

    python bench/length_analysis.py [--examples 40000] [--model models/base] [--workdir .cache/bench-lengths]

Run after `make demo` (it takes the tokenizer of models/base: SmolLM2's, a fast tokenizer). The rows
come from bench/data_pipeline.py's generator: real-shaped lengths (titles of 3-16 words, descriptions
with a long lognormal tail), random words. Both stages run as they do in the pipeline, each in its
own process; `lengths` measures with batched fast-tokenizer calls, `tokenize` encodes one example at a
time (then packs). Prints wall and CPU seconds per stage and the lengths stage's own measuring time.
The random words split into ~5 tokens each (English: ~1.3), so the cut shares it prints say nothing
about the real data; the timing is what it is for.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorapipe.data.data_files import TEXT_SCHEMA, write_table  # noqa: E402


def rows(count: int, seed: int) -> pa.Table:
    """Titles and descriptions shaped like bench/data_pipeline.py's (non-empty ones only)."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnoprstuvwy", k=rng.randint(2, 10))) for _ in range(5000)]
    titles = [" ".join(rng.choices(words, k=rng.randint(3, 16))).title() for _ in range(count)]
    contents = [" ".join(rng.choices(words, k=max(1, min(int(rng.lognormvariate(4.4, 0.9)), 2000)))) for _ in titles]
    return pa.table({"title": titles, "content": contents}, schema=TEXT_SCHEMA)


def timed(script: str, *args: str, cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one stage script run as a child process.

    CPU seconds hold up on a shared machine, where wall time depends on what else runs.
    """
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=cwd, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return time.perf_counter() - started, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40_000)
    parser.add_argument("--model", type=Path, default=ROOT / "models/base")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache/bench-lengths")
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "data/split").mkdir(parents=True)
    write_table(rows(args.examples, seed=0), work / "data/split/train.parquet")
    write_table(rows(max(1, args.examples // 50), seed=1), work / "data/split/val.parquet")
    (work / "params.yaml").write_text((ROOT / "params.yaml").read_text())

    model = str(args.model.resolve())
    tokenize = timed("tokenize_pack.py", "data/split", model, "data/tokenized", "tokenize.json", cwd=work)
    outputs = ("lengths.json", "prompt.csv", "description.csv")
    lengths = timed("lengths.py", "data/split/train.parquet", model, "data/tokenized/train.parquet", *outputs, cwd=work)
    measured = json.loads((work / "lengths.json").read_text())
    print(f"{args.examples:,} train examples ({args.examples // 50:,} val for tokenize), tokenizer of {args.model}")
    print(f"tokenize stage (one example at a time, then packing): {tokenize[0]:6.1f} s wall, {tokenize[1]:6.1f} s CPU")
    print(f"lengths stage (batched fast tokenizer):               {lengths[0]:6.1f} s wall, {lengths[1]:6.1f} s CPU")
    rate = measured["examples_per_s"]
    print(
        f"  of which measuring 3 x {args.examples:,} texts: {measured['seconds']} s wall "
        f"({rate:,} examples/s), {measured['cpu_seconds']} s CPU"
    )
    print(json.dumps({k: measured[k] for k in ("prompt", "description", "packing")}, indent=1))


if __name__ == "__main__":
    main()
