"""Print base vs tuned scores from metrics/eval_details.json as small tables (the end of `make demo`).

python -m lorapipe.reporting.summary [metrics/eval_details.json]

With the per-sample scores beside it (artifacts.EVAL_SCORES), each delta gets its 95% bootstrap
interval over the test samples: a delta whose interval spans zero is not a clear change. Output health
(lorapipe.eval.output_health) comes in a table of its own under the quality scores.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_SCORES
from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.outputs import json_object
from lorapipe.eval.eval_files import read_scores
from lorapipe.reporting.scores_table import HEALTH_NOTE, markdown_table, score_rows


def read_result(path: Path) -> dict:
    """An eval_details.json: its base and tuned scores, or one error line saying what is wrong with it."""
    if not path.is_file():
        raise UserError(f"{path} not found; run the pipeline first (dvc repro)")
    result = json_object(path.read_bytes(), path)
    if not all(isinstance(result.get(m), dict) for m in ("base", "tuned")):
        raise UserError(f"{path}: no base and tuned scores; run the evaluate stage (dvc repro evaluate)")
    return result


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else EVAL_DETAILS
    result = read_result(path)
    samples = read_scores(path=path.with_name(EVAL_SCORES.name))
    print(markdown_table(score_rows(result, samples)))
    print(f"({result.get('samples', '?')} test samples; BLEU 0-100, ROUGE F1 0-1, lower perplexity is better)")
    health = score_rows(result, samples, health=True)
    if health:
        print(f"\nOutput health\n{markdown_table(health)}")
        print(HEALTH_NOTE)


if __name__ == "__main__":
    run_cli(main)
