"""95% bootstrap intervals over test samples, and the verdict a reviewer reads from them.

Two comparisons matter: the tuned model against the base model within one run, and one run's
tuned model against another's (a pull request against its base branch, experiments of a sweep).
Both resample the test samples the two sides share, the same draw for both (paired), so what
varies is the model, not the luck of which samples were drawn. Runs that scored different
samples (another split or seed) can only be compared unpaired: each side is resampled on its
own, the interval is wider, and callers must say so.

Percentile intervals from scipy.stats.bootstrap, seeded and vectorised: one call evaluates all
resamples at once (tens of milliseconds for 1,000 samples). Corpus BLEU and perplexity are those of
lorapipe.eval.corpus_metrics, the output-health statistics those of lorapipe.eval.output_health, which
evaluate's headline scores use too. Imports numpy and scipy only: the report runs without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lorapipe.eval.corpus_metrics import corpus_bleu, perplexity
from lorapipe.eval.eval_files import has_health
from lorapipe.eval.output_health import MEAN_HEALTH, DistinctNgrams

SEED = 0
RESAMPLES = 2000
CONFIDENCE = 0.95
Statistic = Callable[[np.ndarray], np.ndarray]  # (values, ..., samples) -> (...): reduces the samples


def mean(columns: np.ndarray) -> np.ndarray:
    """The mean over samples (the last axis) of a one-value metric: ROUGE is a mean over pairs."""
    return columns[0].mean(axis=-1)


def field(name: str) -> Callable[[dict], list[float]]:
    """A metric's per-sample values: one field of a model's EVAL_SCORES entry (a list spreads out)."""
    return lambda scores: list(np.atleast_1d(scores[name]))


@dataclass(frozen=True)
class Metric:
    label: str
    statistic: Statistic
    values: Callable[[dict], Sequence[float]]  # a model's numbers in an EVAL_SCORES row, for `statistic`
    higher_is_better: bool = True
    decimals: int = 3
    health: bool = False  # output health (lorapipe.eval.output_health): beside the quality metrics, never mixed in
    target: float | None = None  # better is closer to it (the length ratio's 1), whatever the direction
    # A statistic of the texts themselves (distinct-2 pools n-grams): built from all texts of both sides,
    # it reads positions into them; `statistic` and `values` are then unused.
    of_texts: Callable[[Sequence[str]], Statistic] | None = None

    def available(self, rows: Sequence[dict]) -> bool:
        """Whether EVAL_SCORES rows carry what this metric reads (files before output health do not)."""
        return bool(rows) and (not self.health or has_health(rows))


def health(label: str, name: str, **options: Any) -> Metric:
    """A health metric that is the mean of output_health.MEAN_HEALTH[name]: lower is better by default."""
    options.setdefault("higher_is_better", False)
    return Metric(label, mean, lambda scores: [MEAN_HEALTH[name](scores)], health=True, **options)


METRICS = {
    "rougeL": Metric("ROUGE-L", mean, field("rougeL")),
    "bleu": Metric("BLEU", corpus_bleu, field("bleu_stats"), decimals=2),
    "perplexity": Metric("perplexity", perplexity, lambda s: [s["loss"], s["tokens"]], higher_is_better=False),
    "rouge1": Metric("ROUGE-1", mean, field("rouge1")),
    "rouge2": Metric("ROUGE-2", mean, field("rouge2")),
    "runaway": health("runaway share", "runaway"),
    "repeat4": health("repeated 4-grams", "repeat4"),
    "distinct2": Metric("distinct-2", mean, field("text"), health=True, of_texts=DistinctNgrams),
    "length_ratio": health("length ratio (best 1)", "length_ratio", target=1.0),
    "unsupported": health("unsupported figures", "unsupported"),
    "echo": health("title echo or empty", "echo"),
}
HEADLINE = ("rougeL", "bleu", "perplexity")  # the verdict lines, in this order
HEALTH = tuple(name for name, metric in METRICS.items() if metric.health)  # their verdict lines, in this order


def columns(rows: Sequence[dict], model: str, metric: Metric) -> np.ndarray:
    """(values, samples) array of `model`'s values for `metric`; bleu_stats spreads over 10 rows."""
    values = [metric.values(row[model]) for row in rows]
    return np.asarray(values, dtype=float).reshape(len(rows), -1).T


def sides(
    metric: Metric, old: Sequence[dict], old_model: str, new: Sequence[dict], new_model: str
) -> tuple[np.ndarray, np.ndarray, Statistic]:
    """The two arrays the bootstrap resamples, and the statistic of either."""
    if metric.of_texts is None:
        return columns(old, old_model, metric), columns(new, new_model, metric), metric.statistic
    texts = [row[old_model]["text"] for row in old] + [row[new_model]["text"] for row in new]
    positions = np.arange(len(texts), dtype=float)[None]
    return positions[:, : len(old)], positions[:, len(old) :], metric.of_texts(texts)


def interval(
    statistic: Statistic, old: np.ndarray, new: np.ndarray, paired: bool, target: float | None = None
) -> tuple[float, float]:
    """95% percentile bootstrap interval of statistic(new) - statistic(old) over the samples; with a
    `target`, of the change in their distance to it."""
    if min(old.shape[-1], new.shape[-1]) < 2:
        return float("nan"), float("nan")  # one sample has no spread to resample

    def measure(x: np.ndarray) -> np.ndarray:
        return statistic(x) if target is None else np.abs(statistic(x) - target)

    def difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return measure(b) - measure(a)  # scipy puts the sample axis last

    from scipy import stats  # ~0.5 s to import: the model card and the summary need no interval

    result = stats.bootstrap(
        (old, new),
        difference,
        paired=paired,
        vectorized=True,
        axis=-1,
        n_resamples=RESAMPLES,
        batch=500,  # bounds memory: bleu_stats resamples are 10 x batch x samples floats
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class Change:
    """One metric, old -> new, with the 95% interval of the difference."""

    metric: str
    old: float
    new: float
    low: float
    high: float
    paired: bool
    samples: int  # compared: shared samples when paired, both runs' when not
    # A metric with a target: the interval of the change in the distance to it, which the verdict reads.
    distance: tuple[float, float] | None = None

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def verdict(self) -> str:
        """better / worse when the interval excludes zero (for a metric with a target, the interval of the
        distance to it: lower is better), else no clear change."""
        low, high = self.distance or (self.low, self.high)
        if not (low > 0 or high < 0):
            return "no clear change"
        higher_is_better = self.distance is None and METRICS[self.metric].higher_is_better
        return "better" if (low > 0) == higher_is_better else "worse"

    def judgement(self) -> str:
        """The verdict in words that agree with the intervals beside them. For a metric with a target the
        delta's interval says which way the value moved, and the verdict reads another interval, the change
        of the distance to the target, shown with it: `lower; distance to 1: no clear change, -0.237..+0.035`
        (shorter outputs, but not clearly closer to 1)."""
        target = METRICS[self.metric].target
        if self.distance is None or target is None:
            return self.verdict
        d = METRICS[self.metric].decimals
        low, high = self.distance
        moved = "lower; " if self.high < 0 else "higher; " if self.low > 0 else ""
        return f"{moved}distance to {target:g}: {self.verdict}, {low:+.{d}f}..{high:+.{d}f}"

    def bounds(self) -> str:
        """`+0.007..+0.031`: the interval of the delta (n/a for a single sample)."""
        d = METRICS[self.metric].decimals
        return "n/a" if np.isnan(self.low) else f"{self.low:+.{d}f}..{self.high:+.{d}f}"

    def delta_text(self) -> str:
        return f"{self.delta:+.{METRICS[self.metric].decimals}f}"

    def interval_text(self) -> str:
        """`+0.019, 95% CI +0.007..+0.031`: the delta and its interval."""
        return f"{self.delta_text()}, 95% CI {self.bounds()}"

    def line(self) -> str:
        """`ROUGE-L 0.312 -> 0.331 (+0.019, 95% CI +0.007..+0.031): better`."""
        metric = METRICS[self.metric]
        d = metric.decimals
        return f"{metric.label} {self.old:.{d}f} -> {self.new:.{d}f} ({self.interval_text()}): {self.judgement()}"


def compare(
    old: Sequence[dict], old_model: str, new: Sequence[dict], new_model: str, name: str, paired: bool
) -> Change:
    """`name` of `old_model` in rows `old` against `new_model` in rows `new` (aligned when paired)."""
    metric = METRICS[name]
    a, b, statistic = sides(metric, old, old_model, new, new_model)
    low, high = interval(statistic, a, b, paired)
    distance = None if metric.target is None else interval(statistic, a, b, paired, metric.target)
    samples = len(new) if paired else len(old) + len(new)
    return Change(name, float(statistic(a)), float(statistic(b)), low, high, paired, samples, distance)


def tuned_vs_base(rows: Sequence[dict], name: str) -> Change:
    """Within one run: the tuned model against the base model, on the same samples."""
    return compare(rows, "base", rows, "tuned", name, paired=True)


def pair_up(old: Sequence[dict], new: Sequence[dict]) -> tuple[list[dict], list[dict], bool]:
    """Both runs' rows in one order, paired, when one run's samples include the other's (same split;
    a larger eval.max_samples only adds samples); else all rows of each, unpaired."""
    by_id = {row["id"]: row for row in old}
    shared = [row for row in new if row["id"] in by_id]
    if shared and len(shared) == min(len(old), len(new)):
        return [by_id[row["id"]] for row in shared], shared, True
    return list(old), list(new), False


def run_vs_run(old: Sequence[dict], new: Sequence[dict], name: str, model: str = "tuned") -> Change:
    """Across runs: `model` of the new run against the old run's, paired over shared samples if possible."""
    old_rows, new_rows, paired = pair_up(old, new)
    return compare(old_rows, model, new_rows, model, name, paired)
