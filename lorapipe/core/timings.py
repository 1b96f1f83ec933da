"""Where a run's time goes: each stage appends its wall time and peak memory to a log, on request.

Set LORAPIPE_TIMINGS=<file> (as `make demo` does) and every stage script adds a line to it
(lorapipe.core.cli.record_stage, run by run_cli);
`python -m lorapipe.core.timings <file>` prints them as a table. The log sits outside DVC's outs
on purpose: it describes a run of the pipeline, not the pipeline's results.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lorapipe.core.cli import TIMINGS_ENV, UserError, run_cli

QUIET = {"-q", "--quiet"}  # DVC's flags that drop its own lines, errors included


def timing_table(entries: list[dict]) -> str:
    """One row per step, with its share of the total."""
    total = sum(e["seconds"] for e in entries) or 1.0
    lines = [f"{'step':<22}{'seconds':>9}{'share':>8}{'peak MiB':>10}"]
    for e in entries:
        peak = f"{e['peak_mib']:,}" if e.get("peak_mib") else ""
        lines.append(f"{e['step']:<22}{e['seconds']:>9.1f}{e['seconds'] / total:>8.0%}{peak:>10}")
    lines.append(f"{'total':<22}{total:>9.1f}")
    return "\n".join(lines)


def run_timed(command: list[str], log: Path) -> int:
    """Run `command` (e.g. `dvc exp run`) with the log set; add DVC's own share and print the table.

    A quiet DVC command (`dvc repro -q`, as make demo runs) that fails says nothing of its own, errors
    included: a failing stage has printed its error, but DVC's (a broken dvc.yaml, a held lock) is lost,
    so a line after the table names the command that shows it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    started = time.perf_counter()
    code = subprocess.run(command, env={**os.environ, TIMINGS_ENV: str(log)}, check=False).returncode
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    rest = time.perf_counter() - started - sum(e["seconds"] for e in entries)
    entries.append({"step": "dvc (hash, cache, git)", "seconds": round(max(rest, 0.0), 1)})
    print(timing_table(entries), flush=True)
    if code and QUIET & set(command):
        loud = shlex.join(arg for arg in command if arg not in QUIET)
        print(f"error: {shlex.join(command)} failed (exit {code}); `{loud}` says why in DVC's words", file=sys.stderr)
    return code


def main() -> int:  # the timed command's exit status
    """python -m lorapipe.core.timings LOG [-- COMMAND...]: print LOG, or run COMMAND timed into LOG first."""
    path = Path(sys.argv[1])
    if "--" in sys.argv:
        return run_timed(sys.argv[sys.argv.index("--") + 1 :], path)
    if not path.is_file():
        raise UserError(f"{path} not found; set {TIMINGS_ENV}={path} while the stages run")
    print(timing_table([json.loads(line) for line in path.read_text().splitlines() if line.strip()]))
    return 0


if __name__ == "__main__":
    run_cli(main)
