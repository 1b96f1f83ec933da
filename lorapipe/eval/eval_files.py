"""The per-sample files evaluate writes and the report and results page read.

EVAL_SAMPLES: the first `eval.report_samples` texts (title, reference, base, tuned).
EVAL_SCORES: every scored sample, one line each: its `id` (record_ids.record_id), title, reference,
and per model its text and sentence-level scores (scoring.sample_scores, plus the reference's
mean token `loss` and its `tokens`) and its health (output_health.sample_health), so any two runs
can be compared sample by sample. Files written before output health have no health fields.

Reading never raises a traceback: a malformed line is one `error:` naming the file and line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lorapipe.core.artifacts import EVAL_RUN, EVAL_SAMPLES, EVAL_SCORES
from lorapipe.core.cli import UserError
from lorapipe.core.outputs import write_jsonl
from lorapipe.core.record_ids import record_id
from lorapipe.core.vcs import named_at, read_file, read_json_object

MODELS = ("base", "tuned")
# Numbers each model of an EVAL_SCORES line must have; bleu_stats is a list of 10 counts.
SCORE_FIELDS = ("rouge1", "rouge2", "rougeL", "bleu", "loss", "tokens")
# output_health.sample_health's fields, by the check each value must pass; all or none (an older file).
HEALTH_FIELDS: dict[str, Callable[[Any], bool]] = {
    "runaway": lambda value: isinstance(value, bool),
    "repeat4": lambda value: is_number(value),
    "echo": lambda value: isinstance(value, bool),
    "length_ratio": lambda value: is_number(value),
    "unsupported_figures": lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
}


def write_sample_files(
    samples_path: Path,
    scores_path: Path,
    titles: Sequence[str],
    references: Sequence[str],
    outputs: dict[str, list[str]],
    scores: dict[str, list[dict]],
    keep_texts: int,
) -> None:
    """`samples_path` (EVAL_SAMPLES: the first `keep_texts` samples' texts) and `scores_path`
    (EVAL_SCORES: every sample, both models' texts and scores). Scores are rounded to what a report shows."""
    rows = []
    for i, (title, reference) in enumerate(zip(titles, references, strict=True)):
        models = {m: {"text": outputs[m][i], **{k: _round(v) for k, v in scores[m][i].items()}} for m in MODELS}
        rows.append({"id": record_id(title, reference), "title": title, "reference": reference, **models})
    write_jsonl(scores_path, rows)
    write_jsonl(samples_path, ({**row, **{m: row[m]["text"] for m in MODELS}} for row in rows[:keep_texts]))


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value  # counts stay exact


def parse_jsonl(data: bytes, where: str, problems: Callable[[dict], list[str]] = lambda row: []) -> list[dict]:
    """The JSON objects of `data`, one per line; blank lines are skipped, anything else is one error
    naming `where` and the line (so are the `problems` found in an object)."""
    rows = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_not_json)
        except ValueError as err:  # bad JSON or bad UTF-8
            raise UserError(f"{where} line {number}: not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where} line {number}: expected a JSON object, got {type(row).__name__}")
        if found := problems(row):
            raise UserError(f"{where} line {number}: missing or of the wrong type: {', '.join(found)}")
        rows.append(row)
    return rows


def _not_json(constant: str) -> None:
    """Python's json reads NaN and Infinity, which JSON has not: a score that is one would become a verdict."""
    raise ValueError(f"{constant} is not a JSON number")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, nor an int too large for a float): what a score must be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def score_problems(row: dict) -> list[str]:
    """What an EVAL_SCORES object lacks: its id, or a model's numbers."""
    found = [] if isinstance(row.get("id"), str) else ["id"]
    for model in MODELS:
        scores = row.get(model) if isinstance(row.get(model), dict) else {}
        found += [f"{model}.{k}" for k in SCORE_FIELDS if not is_number(scores.get(k))]
        stats = scores.get("bleu_stats")
        counts = isinstance(stats, list) and all(is_number(v) and isinstance(v, int) and v >= 0 for v in stats)
        if not (counts and len(stats) == 10):
            found.append(f"{model}.bleu_stats")
        if any(field in scores for field in HEALTH_FIELDS):
            found += [f"{model}.{k}" for k, valid in HEALTH_FIELDS.items() if not valid(scores.get(k))]
    return found


def has_health(rows: Sequence[dict]) -> bool:
    """Whether EVAL_SCORES rows (score_problems-checked) carry output health: files before it do not."""
    return bool(rows) and all("runaway" in row[model] for row in rows for model in MODELS)


def read_samples(rev: str | None = None, path: Path = EVAL_SAMPLES) -> list[dict]:
    """The rows of an eval_samples.jsonl in the workspace (rev None) or at a git revision; none where absent."""
    data = read_file(rev, path)
    return [] if data is None else parse_jsonl(data, named_at(path, rev))


def read_eval_run(rev: str | None = None, path: Path = EVAL_RUN) -> dict:
    """eval_run.json (experiment name, MLflow run) in the workspace (rev None) or at a git revision; empty
    where absent."""
    return read_json_object(rev, path) or {}


def read_scores(rev: str | None = None, path: Path = EVAL_SCORES) -> list[dict] | None:
    """The rows of `path` in the workspace (rev None) or at a git revision; None where absent (a revision
    before per-sample scores, or one that never ran evaluate)."""
    data = read_file(rev, path)
    return None if data is None else parse_jsonl(data, named_at(path, rev), score_problems)
