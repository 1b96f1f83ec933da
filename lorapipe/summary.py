"""Print base vs tuned scores from metrics/eval.json as a small table (the end of `make demo`).

python -m lorapipe.summary [metrics/eval.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summary_table(result: dict) -> str:
    lines = [f"{'metric':<12}{'base':>10}{'tuned':>10}{'delta':>10}"]
    for name in result["base"]:
        base, tuned, delta = result["base"][name], result["tuned"][name], result["delta"][name]
        lines.append(f"{name:<12}{base:>10.4f}{tuned:>10.4f}{delta:>+10.4f}")
    lines.append(f"({result['samples']} test samples; BLEU 0-100, ROUGE F1 0-1, lower perplexity is better)")
    return "\n".join(lines)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "metrics/eval.json")
    if not path.is_file():
        print(f"error: {path} not found; run the pipeline first (dvc repro)", file=sys.stderr)
        return 1
    print(summary_table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
