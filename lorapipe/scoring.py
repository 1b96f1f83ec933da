"""BLEU (sacrebleu, 0-100) and ROUGE-1/2/L F1 (rouge-score, 0-1) of predictions against references.

Corpus BLEU, the headline, pools the n-gram counts of every sample before taking precisions;
it is not the mean of sentence BLEU. So each sample keeps its counts (`bleu_stats`), from
which corpus BLEU over any subset of samples is recomputed exactly (the bootstrap does this).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def sample_scores(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, Any]]:
    """Per pair: ROUGE-1/2/L F1, smoothed sentence BLEU, and `bleu_stats`: the counts corpus BLEU sums
    (hypothesis length, reference length, matching then total 1- to 4-grams)."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    sentence_bleu = BLEU(effective_order=True)  # sacrebleu's setting for single sentences
    scores = []
    for prediction, reference in zip(predictions, references, strict=True):
        rouge = {name: score.fmeasure for name, score in scorer.score(reference, prediction).items()}
        bleu = sentence_bleu.sentence_score(prediction, [reference])
        stats = [bleu.sys_len, bleu.ref_len, *bleu.counts, *bleu.totals]
        scores.append({**rouge, "bleu": bleu.score, "bleu_stats": stats})
    return scores


def corpus_scores(samples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Corpus BLEU (exactly sacrebleu's corpus_bleu of the same pairs) and mean ROUGE of `sample_scores` rows."""
    stats = np.sum([s["bleu_stats"] for s in samples], axis=0, dtype=np.int64).tolist()
    bleu = BLEU.compute_bleu(stats[2:6], stats[6:10], stats[0], stats[1], smooth_method="exp").score
    rouge = {name: float(np.mean([s[name] for s in samples])) for name in ROUGE_TYPES}
    return {"bleu": bleu, **rouge}


def score_outputs(
    predictions: Sequence[str], references: Sequence[str], losses: Sequence[tuple[float, int]]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One model's per-sample scores (`sample_scores` plus the reference's mean token `loss` and its
    `tokens`) and its headline: corpus BLEU, mean ROUGE and the references' perplexity, rounded."""
    samples = sample_scores(predictions, references)
    for sample, (loss, tokens) in zip(samples, losses, strict=True):
        sample.update(loss=loss, tokens=tokens)
    scores = corpus_scores(samples)
    scores["perplexity"] = math.exp(sum(loss * n for loss, n in losses) / max(sum(n for _, n in losses), 1))
    return samples, {k: round(v, 4) for k, v in scores.items()}
