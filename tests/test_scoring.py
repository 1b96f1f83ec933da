from __future__ import annotations

import math

import pytest
import sacrebleu

from lorapipe.eval.scoring import ROUGE_TYPES, corpus_scores, sample_scores


def bleu_score(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU as evaluate reports it: from the per-sample counts that sample_scores keeps."""
    return corpus_scores(sample_scores(predictions, references))["bleu"]


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over the pairs, as evaluate reports it."""
    scores = corpus_scores(sample_scores(predictions, references))
    return {name: scores[name] for name in ROUGE_TYPES}


def test_identical_texts_score_perfectly():
    refs = ["a blue steel water bottle with a leak proof lid", "soft running shoes for long runs"]
    assert bleu_score(refs, refs) == pytest.approx(100.0)
    assert rouge_scores(refs, refs) == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})


def test_disjoint_texts_score_zero():
    assert bleu_score(["alpha beta gamma delta"], ["one two three four"]) == pytest.approx(0.0)
    assert rouge_scores(["alpha beta"], ["one two"]) == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})


def test_rouge_on_a_hand_computed_pair():
    # reference 6 tokens, prediction 4: unigram overlap {the, cat, on, mat} = 4 -> P 1, R 4/6, F1 0.8.
    # bigrams: pred (the cat)(cat on)(on mat) vs ref (the cat)(cat sat)(sat on)(on the)(the mat): overlap 1
    # -> P 1/3, R 1/5, F1 0.25. LCS "the cat on mat" = 4 -> same as ROUGE-1: 0.8.
    scores = rouge_scores(["the cat on mat"], ["the cat sat on the mat"])
    assert scores == pytest.approx({"rouge1": 0.8, "rouge2": 0.25, "rougeL": 0.8})


def test_bleu_on_a_hand_computed_pair():
    hyp, ref = "the cat sat on the mat", "the cat sat on the red mat"
    # n-gram precisions 6/6, 4/5 ("the mat" is not in ref), 3/4, 2/3; brevity penalty exp(1 - 7/6).
    expected = 100 * math.exp(1 - 7 / 6) * (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    assert bleu_score([hyp], [ref]) == pytest.approx(expected, rel=1e-6)
    assert sacrebleu.corpus_bleu([hyp], [[ref]]).score == pytest.approx(expected, rel=1e-6)  # as papers report it


def test_rouge_is_a_mean_over_pairs():
    scores = rouge_scores(["the cat on mat", "x"], ["the cat sat on the mat", "x"])
    assert scores["rouge1"] == pytest.approx((0.8 + 1.0) / 2)
