"""Bootstrap intervals and verdicts on constructed per-sample scores, checked against reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from scipy import stats

from lorapipe.eval.corpus_metrics import corpus_bleu
from lorapipe.eval.evaluation import ModelOutputs
from lorapipe.eval.scoring import sample_scores, score_outputs
from lorapipe.reporting.compare import METRICS, columns, pair_up, run_vs_run, tuned_vs_base
from lorapipe.reporting.scores_table import score_rows

WORDS = ["the", "a", "blue", "red", "steel", "mug", "lamp", "bottle", "lid", "for", "desk", "travel", "warm", "light"]


def texts(rng: np.random.Generator, count: int, longest: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, longest + 1))) for _ in range(count)]


def run(rng: np.random.Generator, count: int, shift: float, start: int = 0) -> list[dict]:
    """Per-sample rows as evaluate writes them: the tuned model `shift` better than the base in ROUGE-L."""
    rows = []
    for i in range(start, start + count):
        base = {"rouge1": 0.3, "rouge2": 0.1, "rougeL": float(rng.uniform(0.1, 0.5)), "bleu": 5.0}
        base |= {"bleu_stats": [20, 25, 10, 5, 2, 1, 20, 19, 18, 17], "loss": float(rng.uniform(1, 3)), "tokens": 30}
        tuned = {**base, "rougeL": base["rougeL"] + shift + float(rng.normal(0, 0.05))}
        rows.append({"id": f"s{i:04d}", "title": f"t{i}", "reference": "r", "base": base, "tuned": tuned})
    return rows


def test_bleu_statistic_is_sacrebleus_corpus_bleu_on_any_subset():
    rng = np.random.default_rng(0)
    hyps, refs = texts(rng, 60, 12), texts(rng, 60, 15)
    hyps[:3] = ["", "x", "the"]  # empty and too short for 4-grams
    stats_rows = columns([{"m": s} for s in sample_scores(hyps, refs)], "m", METRICS["bleu"])
    for _ in range(20):
        subset = np.sort(rng.choice(60, size=rng.integers(1, 61), replace=False))
        expected = sacrebleu.corpus_bleu([hyps[i] for i in subset], [[refs[i] for i in subset]]).score
        assert corpus_bleu(stats_rows[:, subset]) == pytest.approx(expected, abs=1e-9)


HAND_MADE = [  # (hypothesis, reference): a close match, a short one, an empty one, one too short for 4-grams
    ("a blue steel water bottle with a lid", "a blue steel water bottle with a leak proof lid"),
    ("soft shoes", "soft running shoes for long runs"),
    ("", "a lamp for the desk"),
    ("warm mug", "a warm mug"),
]


@pytest.mark.parametrize("count", [1, 2, 4])
def test_headline_scores_are_sacrebleus_corpus_bleu_and_the_pooled_perplexity(count):
    """evaluate's headline and the bootstrap's statistic are one computation: sacrebleu's corpus BLEU."""
    hyps, refs = [h for h, _ in HAND_MADE[:count]], [r for _, r in HAND_MADE[:count]]
    losses = [(2.0, 10), (1.0, 30), (3.5, 4), (0.5, 1)][:count]
    _, headline = score_outputs(refs, refs, ModelOutputs(hyps, [False] * count, losses))
    assert headline["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 4)
    pooled = np.exp(sum(loss * n for loss, n in losses) / sum(n for _, n in losses))
    assert headline["perplexity"] == round(pooled, 4)
    stats_rows = columns([{"m": s} for s in sample_scores(hyps, refs)], "m", METRICS["bleu"])
    assert corpus_bleu(stats_rows) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_paired_interval_matches_a_slow_bootstrap_loop_and_the_t_interval():
    rng = np.random.default_rng(1)
    rows = run(rng, 400, shift=0.01)
    change = tuned_vs_base(rows, "rougeL")
    diffs = np.array([r["tuned"]["rougeL"] - r["base"]["rougeL"] for r in rows])
    # Reference 1: the textbook loop, one resample of the samples at a time.
    loop = np.random.default_rng(7)
    means = [diffs[loop.integers(0, len(diffs), len(diffs))].mean() for _ in range(4000)]
    low, high = np.percentile(means, [2.5, 97.5])
    width = high - low
    assert change.low == pytest.approx(low, abs=0.1 * width) and change.high == pytest.approx(high, abs=0.1 * width)
    # Reference 2: for a mean of 400 paired differences the bootstrap is close to Student's t.
    t = stats.ttest_rel([r["tuned"]["rougeL"] for r in rows], [r["base"]["rougeL"] for r in rows])
    ci = t.confidence_interval(0.95)
    assert change.low == pytest.approx(ci.low, abs=0.1 * width)
    assert change.high == pytest.approx(ci.high, abs=0.1 * width)
    assert change.delta == pytest.approx(diffs.mean())


def test_bleu_and_perplexity_intervals_match_a_slow_loop():
    rng = np.random.default_rng(2)
    hyps, refs = texts(rng, 200, 12), texts(rng, 200, 15)
    better = [f"{r} {h}" if i % 2 else r for i, (h, r) in enumerate(zip(hyps, refs, strict=True))]
    rows = []
    for i, (b, t) in enumerate(zip(sample_scores(hyps, refs), sample_scores(better, refs), strict=True)):
        loss = float(rng.uniform(1, 3))
        base, tuned = {**b, "loss": loss, "tokens": 20}, {**t, "loss": loss - 0.2, "tokens": 20}
        rows.append({"id": str(i), "base": base, "tuned": tuned})
    loop = np.random.default_rng(3)
    for name in ("bleu", "perplexity"):
        metric = METRICS[name]
        old, new = columns(rows, "base", metric), columns(rows, "tuned", metric)
        draws = [loop.integers(0, 200, 200) for _ in range(3000)]
        deltas = [metric.statistic(new[:, i]) - metric.statistic(old[:, i]) for i in draws]
        low, high = np.percentile(deltas, [2.5, 97.5])
        change = tuned_vs_base(rows, name)
        assert change.low == pytest.approx(low, abs=0.1 * (high - low)), name
        assert change.high == pytest.approx(high, abs=0.1 * (high - low)), name


def test_same_seed_same_interval():
    rows = run(np.random.default_rng(4), 300, shift=0.0)
    assert tuned_vs_base(rows, "bleu") == tuned_vs_base(rows, "bleu")
    assert tuned_vs_base(rows, "rougeL") == tuned_vs_base(rows, "rougeL")


VERDICTS = {"better": (0.05, "better"), "worse": (-0.05, "worse"), "identical": (0.0, "no clear change")}


@pytest.mark.parametrize(("shift", "expected"), VERDICTS.values(), ids=VERDICTS.keys())
def test_verdict_of_a_clearly_better_a_clearly_worse_and_an_identical_run(shift, expected):
    old = run(np.random.default_rng(5), 300, shift=0.1)
    new = [{**row, "tuned": {**row["tuned"], "rougeL": row["tuned"]["rougeL"] + shift}} for row in old]
    change = run_vs_run(old, new, "rougeL")
    assert change.paired and change.samples == 300
    assert change.verdict == expected, change.line()
    if shift == 0:
        assert (change.low, change.high) == (0, 0)
    assert change.line().startswith(f"ROUGE-L {change.old:.3f} -> {change.new:.3f} ({shift:+.3f}, 95% CI ")


def test_lower_perplexity_is_better():
    old = run(np.random.default_rng(6), 200, shift=0.0)
    new = [{**row, "tuned": {**row["tuned"], "loss": row["tuned"]["loss"] - 0.3}} for row in old]
    change = run_vs_run(old, new, "perplexity")
    assert change.delta < 0 and change.high < 0 and change.verdict == "better"


def test_a_length_ratio_that_moved_past_1_reads_lower_and_not_clearly_closer_to_1():
    """Base outputs 10% too long, tuned 10% too short: the ratio clearly fell, its distance to 1 did not
    clearly change. The words beside each interval say what that interval says (summary, PR report, page)."""
    rng = np.random.default_rng(9)
    health = {"runaway": False, "repeat4": 0.0, "echo": False, "unsupported_figures": [], "text": "a mug for a desk"}
    rows = [
        {"base": {**health, "length_ratio": 1.1 + rng.normal(0, 0.05)}, "tuned": {**health, "length_ratio": x}}
        for x in 0.9 + rng.normal(0, 0.05, 200)
    ]
    change = tuned_vs_base(rows, "length_ratio")
    assert change.high < 0 and change.distance[0] < 0 < change.distance[1] and change.verdict == "no clear change"
    low, high = change.distance
    words = f"lower; distance to 1: no clear change, {low:+.3f}..{high:+.3f}"
    row = next(row for row in score_rows(samples=rows, health=True) if row.metric == "length_ratio")
    assert row.interval() == f"{change.bounds()} ({words})"
    assert change.line().endswith(f"95% CI {change.bounds()}): {words}")


def test_runs_of_other_samples_are_compared_unpaired():
    rng = np.random.default_rng(8)
    old, other = run(rng, 200, shift=0.0), run(rng, 200, shift=0.0, start=5000)
    assert pair_up(old, other)[2] is False
    change = run_vs_run(old, other, "rougeL")
    assert not change.paired and change.samples == 400
    # A larger eval.max_samples on the same split only adds samples: still paired, over the shared ones.
    old_rows, new_rows, paired = pair_up(old[:120], old)
    assert paired and [r["id"] for r in old_rows] == [r["id"] for r in new_rows] == [r["id"] for r in old[:120]]
