"""Benchmark clean + sample + split at the real dump's size, against the seed's pandas recipe and a bare streaming pass.

    python bench/data_pipeline.py [--records 2248619] [--workdir .cache/bench-data]

All three run in the same invocation on the same generated file, each in its own process, so
peak RSS is per process (ru_maxrss of the child). Targets for lorapipe's three stages together:
at most 15 s wall, and at most 1 GiB peak RSS in each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scripts.make_synthetic_data import dump_shaped

ROOT = Path(__file__).resolve().parents[1]

PANDAS_BASELINE = """
import html, sys, pandas as pd
df = pd.read_json(sys.argv[1], lines=True)
df = df[(df.title.str.strip() != "") & (df.content.str.strip() != "")]
df["content"] = df.content.map(html.unescape)
df = df.drop_duplicates(subset="title").sample(n=40000, random_state=42)
train = df.sample(frac=0.8, random_state=42)
test = df.drop(train.index)
print(len(train), len(test))
"""
# The practical limit: one pass that parses every line, skips empties, keeps first titles, samples.
STREAMING_REFERENCE = """
import random, sys, orjson
from isal import igzip_threaded
seen, kept = set(), []
with igzip_threaded.open(sys.argv[1], "rb", threads=1) as f:
    for line in f:
        r = orjson.loads(line)
        if r["content"].strip() and r["title"].strip():
            h = hash(r["title"])
            if h not in seen:
                seen.add(h)
                kept.append((r["title"], r["content"]))
sample = random.Random(42).sample(kept, 40000)
print(len(kept), len(sample))
"""


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process (wait4 gives that child's own rusage)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[1]} failed with exit code {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_248_619)  # the real trn.json.gz
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache/bench-data")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"trn-{args.records}.json.gz"
    if not raw.exists():
        started = time.perf_counter()
        dump_shaped(raw, args.records)
        print(f"generated {raw} ({raw.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.0f} s")
    # The real run's data params (a workspace may have the offline profile applied).
    # Copied as committed, not re-read and re-written: the stages read it as DVC does (lorapipe.core.params).
    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, check=True).stdout
    (work / "params.yaml").write_bytes(committed)

    steps = {
        "clean": ["stages/clean.py", str(raw), "clean.parquet", "rejects.jsonl", "clean.json", "near_limits.jsonl"],
        "sample": ["stages/sample.py", "clean.parquet", "sample.parquet", "sample.json"],
        "split": ["stages/split.py", "sample.parquet", "split", "split.json", "test_ids.txt"],
    }
    results = {}
    for name, (script, *rest) in steps.items():
        wall, peak = timed([sys.executable, str(ROOT / script), *rest], work)
        results[name] = {"wall_s": round(wall, 1), "peak_mib": round(peak)}
        print(f"{name:8s} {wall:6.1f} s  peak {peak:7,.0f} MiB")
    total = sum(r["wall_s"] for r in results.values())
    peak = max(r["peak_mib"] for r in results.values())
    print(f"lorapipe clean+sample+split: {total:.1f} s wall, {peak:,} MiB peak (targets: <= 15 s, <= 1,024 MiB)")
    summary = {"records": args.records, "lorapipe": {"wall_s": round(total, 1), "peak_mib": peak, **results}}
    others = {"streaming_reference": STREAMING_REFERENCE}
    if not args.no_baseline:
        others["pandas_baseline"] = PANDAS_BASELINE
    for name, script in others.items():
        wall, other_peak = timed([sys.executable, "-c", script, str(raw)], work)
        print(f"{name:27s}: {wall:.1f} s wall, {other_peak:,.0f} MiB peak; lorapipe takes {total / wall:.2f}x its time")
        summary[name] = {"wall_s": round(wall, 1), "peak_mib": round(other_peak)}
    (work / "result.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
