"""The base / tuned / delta table of a run's scores: rows built once, drawn as markdown or as HTML cells.

The model card, the summary `make demo` prints, the PR report and the results page show the same
rows: per metric, headline metrics first (output health in a table of its own), the base and the
tuned model's score and the delta, with the delta's 95% bootstrap interval when the run has per-sample
scores (artifacts.EVAL_SCORES). Numbers are shown with each metric's decimals (reporting.compare.METRICS).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lorapipe.reporting.compare import METRICS, Change, tuned_vs_base

CI = "95% CI of delta"
# Under every output-health table: how to read it (definitions: lorapipe.eval.output_health, README).
HEALTH_NOTE = (
    "(shares of outputs that ran to max_new_tokens without EOS, that have an unsupported figure, that are "
    "empty or only the title's words; mean repeated-4-gram rate; distinct word bigrams over all outputs; "
    "mean output/reference length in words: lower is better except distinct-2, and length ratio is best at 1)"
)


@dataclass(frozen=True)
class ScoreRow:
    metric: str  # eval_details.json's key: rougeL, bleu, ...
    base: float
    tuned: float
    change: Change | None = None  # tuned vs base over the per-sample scores: the delta's interval
    run: str = ""  # markdown naming the run, in a table of several runs

    @property
    def label(self) -> str:
        return METRICS[self.metric].label if self.metric in METRICS else self.metric

    @property
    def delta(self) -> float:
        return self.tuned - self.base

    def number(self, value: float, sign: bool = False) -> str:
        decimals = METRICS[self.metric].decimals if self.metric in METRICS else 4
        return f"{value:{'+' if sign else ''}.{decimals}f}"

    def interval(self) -> str:
        """`+0.007..+0.031 (better)`; `n/a` for a single sample, empty without per-sample scores."""
        if self.change is None:
            return ""
        return "n/a" if math.isnan(self.change.low) else f"{self.change.bounds()} ({self.change.judgement()})"


def score_rows(
    result: dict | None = None, samples: Sequence[dict] | None = None, run: str = "", health: bool = False
) -> list[ScoreRow]:
    """One row per metric: the base and tuned scores of an eval_details.json (`result`), else of the per-sample
    `samples` (artifacts.EVAL_SCORES rows); with `samples`, each delta's 95% interval over them. The
    quality metrics, or with `health` the output-health ones: two tables, never one."""
    wanted = [name for name, metric in METRICS.items() if metric.health == health]
    changes = {name: tuned_vs_base(samples, name) for name in wanted if METRICS[name].available(samples or [])}
    if result is None:
        return [ScoreRow(name, c.old, c.new, c, run) for name, c in changes.items()]
    base, tuned = result.get("base") or {}, result.get("tuned") or {}
    others = [] if health else [name for name in base if name not in METRICS]  # an eval_details.json of another version
    names = [name for name in wanted if name in base] + others
    return [ScoreRow(name, base[name], tuned[name], changes.get(name), run) for name in names if name in tuned]


def markdown_table(rows: Sequence[ScoreRow]) -> str:
    """| metric | base | tuned | delta |, then the interval where a row has one, and a first column naming
    the run where rows name theirs. Padded, so that it reads as well printed in a terminal."""
    runs, intervals = any(r.run for r in rows), any(r.change for r in rows)
    columns = [("run", False)] if runs else []
    columns += [("metric", False), ("base", True), ("tuned", True), ("delta", True)]
    columns += [(CI, False)] if intervals else []
    body = []
    for r in rows:
        numbers = [r.number(r.base), r.number(r.tuned), r.number(r.delta, sign=True)]
        body.append([*([r.run] if runs else []), r.label, *numbers, *([r.interval()] if intervals else [])])
    head = [name for name, _ in columns]
    widths = [max(3, *map(len, cells)) for cells in zip(head, *body, strict=True)]
    right = [flush for _, flush in columns]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right, strict=True)]
    return "\n".join([line(head), line(rule), *map(line, body)])


def html_cell(row: ScoreRow | None, column: str) -> str:
    """A results-page `<td>` of a row: its `base`, `tuned` or `delta` (the delta with its interval's
    bounds when it has one); a dash without a row."""
    if row is None:
        return '<td class="num">—</td>'
    if column == "delta":
        text = row.number(row.delta, sign=True) + (f" ({row.change.bounds()})" if row.change else "")
    else:
        text = row.number(getattr(row, column))
    return f'<td class="num">{html.escape(text)}</td>'
