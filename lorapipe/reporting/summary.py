"""Print base vs tuned scores from metrics/eval.json as a small table (the end of `make demo`).

python -m lorapipe.reporting.summary [metrics/eval.json]

With the per-sample scores beside it (eval_scores.jsonl), each delta gets its 95% bootstrap
interval over the test samples: a delta whose interval spans zero is not a clear change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lorapipe.artifacts import EVAL_JSON, EVAL_SCORES
from lorapipe.cli import UserError, run_cli
from lorapipe.reporting.compare import METRICS, Change, tuned_vs_base
from lorapipe.samples import read_scores


def summary_table(result: dict, changes: dict[str, Change] | None = None) -> str:
    """base, tuned and delta per metric of an eval.json; the delta's 95% interval from `changes`."""
    changes = changes or {}
    lines = [f"{'metric':<12}{'base':>10}{'tuned':>10}{'delta':>10}  {'95% CI of delta' if changes else ''}".rstrip()]
    for name in result["base"]:
        base, tuned, delta = result["base"][name], result["tuned"][name], result["delta"][name]
        interval = f"  {changes[name].bounds():<16}{changes[name].verdict}" if name in changes else ""
        lines.append(f"{name:<12}{base:>10.4f}{tuned:>10.4f}{delta:>+10.4f}{interval}")
    lines.append(f"({result['samples']} test samples; BLEU 0-100, ROUGE F1 0-1, lower perplexity is better)")
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else EVAL_JSON
    if not path.is_file():
        raise UserError(f"{path} not found; run the pipeline first (dvc repro)")
    scores = read_scores(path=path.with_name(EVAL_SCORES.name))
    changes = {name: tuned_vs_base(scores, name) for name in METRICS} if scores else {}
    print(summary_table(json.loads(path.read_text()), changes))


if __name__ == "__main__":
    run_cli(main)
