"""BLEU (sacrebleu, 0-100) and ROUGE-1/2/L F1 (rouge-score, 0-1) of predictions against references."""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def bleu_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU with sacrebleu's default 13a tokenizer, as papers report it."""
    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean F1 of ROUGE-1, ROUGE-2 and ROUGE-L over the pairs (Porter stemming on)."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for name, score in scorer.score(reference, prediction).items():
            totals[name] += score.fmeasure
    n = max(len(references), 1)
    return {name: total / n for name, total in totals.items()}


def text_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return {"bleu": bleu_score(predictions, references), **rouge_scores(predictions, references)}
