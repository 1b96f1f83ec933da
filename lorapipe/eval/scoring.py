"""BLEU (sacrebleu, 0-100), ROUGE-1/2/L F1 (rouge-score, 0-1) and output health of a model's outputs.

Corpus BLEU, the headline, pools the n-gram counts of every sample before taking precisions;
it is not the mean of sentence BLEU. So each sample keeps its counts (`bleu_stats`), from
which corpus BLEU over any subset of samples is recomputed exactly (lorapipe.eval.corpus_metrics,
for the headline here and for the report's bootstrap). Output health (lorapipe.eval.output_health:
runaway, repetition, title echo, length, unsupported figures) sits beside them, never mixed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU

from lorapipe.eval.corpus_metrics import corpus_bleu, perplexity
from lorapipe.eval.output_health import health_scores, sample_health

if TYPE_CHECKING:  # only a type here: scoring loads no torch
    from lorapipe.eval.evaluation import ModelOutputs

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
    bleu = float(corpus_bleu(np.transpose([s["bleu_stats"] for s in samples])))
    rouge = {name: float(np.mean([s[name] for s in samples])) for name in ROUGE_TYPES}
    return {"bleu": bleu, **rouge}


def score_outputs(
    titles: Sequence[str], references: Sequence[str], outputs: ModelOutputs
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One model's per-sample scores (`sample_scores`, the reference's mean token `loss` and its `tokens`,
    and `sample_health`) and its headline: corpus BLEU, mean ROUGE, the references' perplexity and
    `health_scores`, rounded."""
    samples = sample_scores(outputs.texts, references)
    rows = zip(samples, titles, references, outputs.texts, outputs.runaway, outputs.losses, strict=True)
    for sample, title, reference, text, runaway, (loss, tokens) in rows:
        sample.update(loss=loss, tokens=tokens, **sample_health(text, title, reference, runaway))
    scores = corpus_scores(samples)
    scores["perplexity"] = float(perplexity(np.transpose(outputs.losses)))
    scores |= health_scores(samples, outputs.texts)
    return samples, {k: round(v, 4) for k, v in scores.items()}


def score_models(
    titles: Sequence[str], references: Sequence[str], outputs: dict[str, ModelOutputs]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]]]:
    """`score_outputs` of the base and the tuned model, and the headline's change from one to the other:
    the per-sample scores by model, and eval_details.json's base, tuned and delta scores."""
    per_sample, results = {}, {}
    for name in ("base", "tuned"):
        per_sample[name], results[name] = score_outputs(titles, references, outputs[name])
    results["delta"] = {k: round(results["tuned"][k] - results["base"][k], 4) for k in results["base"]}
    return per_sample, results
