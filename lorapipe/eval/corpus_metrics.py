"""Corpus BLEU and perplexity from per-sample counts: the one implementation of each.

Both pool over samples rather than average them, so they are computed from what each sample keeps
in eval_scores.jsonl: BLEU from its `bleu_stats` (scoring.sample_scores), perplexity from its mean
reference `loss` and `tokens`. evaluate computes a model's headline with them and the report's
bootstrap (reporting.compare) recomputes them on thousands of resamples at once: each function
takes an array of (fields, ..., samples), reduces the samples and keeps the axes between. numpy
only: the report job installs neither torch nor sacrebleu.
"""

from __future__ import annotations

import numpy as np

# bleu_stats, per sample: hypothesis length, reference length, matching 1- to 4-grams, then all 1- to 4-grams.
BLEU_STATS = 10


def corpus_bleu(stats: np.ndarray) -> np.ndarray:
    """sacrebleu's corpus BLEU (13a, 'exp' smoothing), 0-100, of (BLEU_STATS, ..., samples) `bleu_stats`."""
    sums = np.asarray(stats, dtype=float).sum(axis=-1)
    sys_len, ref_len, correct, total = sums[0], sums[1], sums[2:6], sums[6:10]
    with np.errstate(divide="ignore", invalid="ignore"):
        # 'exp' smoothing: the k-th n-gram order without a match counts as 1 / 2**k matches
        smoothed = np.where(correct == 0, 1 / 2.0 ** np.cumsum(correct == 0, axis=0), correct)
        log_precision = np.log(100 * smoothed / total).mean(axis=0)
        brevity = np.where(sys_len < ref_len, np.exp(1 - ref_len / sys_len), 1.0)
        score = brevity * np.exp(log_precision)
    # No match at all, or hypotheses too short for 4-grams: sacrebleu's BLEU is 0.
    return np.where((correct.sum(axis=0) == 0) | (total == 0).any(axis=0), 0.0, score)


def perplexity(losses: np.ndarray) -> np.ndarray:
    """exp of the mean loss per reference token, from (2, ..., samples): per-sample mean `loss`, then `tokens`."""
    loss, tokens = np.asarray(losses, dtype=float)
    return np.exp((loss * tokens).sum(axis=-1) / np.maximum(tokens.sum(axis=-1), 1))
