"""Token length statistics: percentiles, what a budget cuts, the budget a coverage needs, histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from lorapipe.data.prompt import encode_prompts, encode_texts

PERCENTILES = (50, 90, 95, 99)
COVERAGES = (95, 99)  # the budgets that keep this share of examples whole
HISTOGRAM_BINS = 60


def token_lengths(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch: int = 4096) -> np.ndarray:
    """Token count of each text (no special tokens)."""
    return np.array([len(ids) for ids in encode_texts(tokenizer, texts, batch)], dtype=np.int64)


def prompt_lengths(tokenizer: PreTrainedTokenizerBase, titles: Sequence[str]) -> np.ndarray:
    """Token count of each title's prompt, template included, as training encodes it."""
    return np.array([len(ids) for ids in encode_prompts(tokenizer, titles)], dtype=np.int64)


def coverage_budget(lengths: np.ndarray, share: float) -> int:
    """The smallest budget that keeps at least `share` of the examples whole (the inverted CDF)."""
    return int(np.quantile(lengths, share, method="inverted_cdf"))


def length_summary(lengths: np.ndarray, budget: int | None = None) -> dict:
    """Percentiles and max; with a budget, the share it cuts and the budgets for 95% and 99% coverage."""
    summary: dict = {f"p{p}": coverage_budget(lengths, p / 100) for p in PERCENTILES}
    summary |= {"max": int(lengths.max()), "mean": round(float(lengths.mean()), 1)}
    if budget is not None:
        summary |= {
            "budget": budget,
            "cut_share": round(float((lengths > budget).mean()), 4),
            **{f"budget_for_{c}pct": coverage_budget(lengths, c / 100) for c in COVERAGES},
        }
    return summary


def histogram_rows(lengths: np.ndarray, budget: int, bins: int = HISTOGRAM_BINS) -> list[dict]:
    """Equal-width bins of whole tokens covering every length and the budget, for a `dvc plots` CSV.

    Each row repeats the budget so the plot template can draw it as a rule.
    """
    top = max(int(lengths.max()), budget) + 1
    width = max(1, math.ceil(top / bins))
    counts = np.bincount(lengths // width, minlength=math.ceil(top / width))
    return [{"tokens": i * width, "examples": int(n), "budget": budget} for i, n in enumerate(counts)]


def packed_examples(position_ids: np.ndarray) -> np.ndarray:
    """Lengths of the examples in packed rows, from their position ids (each example restarts at 0)."""
    starts = np.flatnonzero(position_ids == 0)
    return np.diff(np.append(starts, len(position_ids)))


def packing_summary(row_lengths: np.ndarray, example_lengths: np.ndarray, seq_len: int) -> dict:
    """How full the packed rows are, and how close the longest example comes to seq_len."""
    fill = row_lengths / seq_len
    return {
        "seq_len": seq_len,
        "rows": len(row_lengths),
        "fill_mean": round(float(fill.mean()), 4),
        "fill_p50": round(float(np.median(fill)), 4),
        "rows_at_least_90pct_full": round(float((fill >= 0.9).mean()), 4),
        "examples_per_row": round(len(example_lengths) / len(row_lengths), 2),
        "longest_example": int(example_lengths.max()),
    }
