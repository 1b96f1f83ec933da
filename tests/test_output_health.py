"""Output health on hand-made outputs: each definition of lorapipe.eval.output_health pinned by a case."""

from __future__ import annotations

import numpy as np
import pytest

from lorapipe.eval.output_health import (
    DistinctNgrams,
    distinct_ngram_share,
    figures,
    health_scores,
    sample_health,
    unsupported_figures,
)
from tests.workspace import params_of

TITLE = "Bluepeak Glass Water Bottle, 500 ml, Orange"
REFERENCE = "Stay hydrated with the Bluepeak water bottle. Made of glass, it holds 500 ml and comes in orange."


def test_a_looping_text_repeats_most_of_its_4_grams():
    text = "a great bottle for you " * 5  # 25 words, 22 4-grams of which 5 are distinct
    health = sample_health(text, TITLE, REFERENCE, runaway=True)
    assert health["repeat4"] == pytest.approx(1 - 5 / 22)
    assert health["runaway"] is True and health["echo"] is False
    assert health["length_ratio"] == pytest.approx(25 / 18)


def test_a_perfect_copy_of_the_reference_is_healthy():
    health = sample_health(REFERENCE, TITLE, REFERENCE, runaway=False)
    assert health == {
        "runaway": False,
        "repeat4": 0.0,
        "echo": False,
        "length_ratio": 1.0,
        "unsupported_figures": [],
    }


@pytest.mark.parametrize(
    "text",
    ["", "   ", "Bluepeak Glass Water Bottle, 500 ml, Orange", "bluepeak bottle. BOTTLE! orange", "…"],
)
def test_empty_output_or_only_the_titles_words_is_an_echo(text):
    health = sample_health(text, TITLE, REFERENCE, runaway=False)
    assert health["echo"] is True and health["unsupported_figures"] == []


def test_one_new_word_is_no_echo_and_an_empty_output_has_length_ratio_zero():
    assert sample_health("Bluepeak bottle, leak-proof", TITLE, REFERENCE, runaway=False)["echo"] is False
    empty = sample_health("", TITLE, REFERENCE, runaway=False)
    assert empty["length_ratio"] == 0.0 and empty["repeat4"] == 0.0
    assert sample_health("three words only", TITLE, "", runaway=False)["length_ratio"] == 3.0  # no reference words


def test_invented_figures_are_unsupported_and_the_sources_figures_are_not():
    text = "Holds 1000L, or 500 ml. Comes with a 5-year warranty, runs on 12 V, 1,000 mAh, 20% lighter."
    assert unsupported_figures(text, TITLE, REFERENCE) == ["1000L", "5-year", "12 V", "1,000 mAh", "20%"]
    assert (
        unsupported_figures(text, "Pump 12V 1000 mAh", "It holds 1000 l (500 ml cups), 5 years, 20 percent lighter.")
        == []
    )


def test_figures_read_numbers_and_units_but_not_model_numbers():
    assert figures('WH-1000XM4 headphones, 55" screen, 2,5 kg, 3 in 1, 20 TMoz') == [
        ('55"', "55", "inch"),
        ("2,5 kg", "2.5", "kg"),
        ("3", "3", ""),
        ("1", "1", ""),
        ("20", "20", ""),
    ]
    # A unit on one side only still supports the number; two different units do not.
    assert unsupported_figures("holds 500", TITLE, "") == []
    assert unsupported_figures("holds 500 ml", "Bottle 500", "") == []
    assert unsupported_figures("holds 500 g", TITLE, "") == ["500 g"]


def test_non_ascii_text():
    title = "Tasse en céramique Œuvre, 350 ml, bleu"
    text = "Une tasse élégante en céramique: 350 ml, garantie 2 ans — idéale. 日本製 マグカップ"
    health = sample_health(text, title, "Tasse en céramique bleue de 350 ml.", runaway=False)
    assert health["unsupported_figures"] == ["2"]
    assert health["echo"] is False and health["repeat4"] == 0.0
    assert health["length_ratio"] == pytest.approx(13 / 7)  # 日本製 and マグカップ are one word each
    assert sample_health("Tasse céramique œuvre", title, "", runaway=False)["echo"] is True  # case folds


def test_distinct_2_pools_bigrams_over_all_outputs():
    texts = ["a red mug", "a red mug", "a blue lamp for desks"]  # bigrams: 2 + 2 + 4, distinct: 2 + 4
    assert distinct_ngram_share(texts) == pytest.approx(6 / 8)
    assert distinct_ngram_share(["same template here"] * 10) == pytest.approx(2 / 20)  # collapse shows
    assert distinct_ngram_share(["", "one"]) == 0.0


def test_distinct_2_of_a_resample_counts_a_drawn_twice_text_twice():
    texts = ["a red mug", "a blue lamp for desks", "one"]
    statistic = DistinctNgrams(texts)
    positions = np.array([[[0, 1, 2], [0, 0, 2], [2, 2, 2]]], dtype=float)  # (values, resamples, samples)
    assert statistic(positions) == pytest.approx([6 / 6, 2 / 4, 0.0])


def test_headline_health_is_the_mean_of_the_samples_and_distinct_2_of_the_texts():
    outputs = [("a great bottle for you " * 5, True), ("", False), (REFERENCE, False), ("holds 1000L", False)]
    samples = [sample_health(text, TITLE, REFERENCE, runaway) for text, runaway in outputs]
    headline = health_scores(samples, [text for text, _ in outputs])
    assert headline["runaway"] == 0.25 and headline["echo"] == 0.25 and headline["unsupported"] == 0.25
    assert headline["repeat4"] == pytest.approx((1 - 5 / 22) / 4)
    assert headline["length_ratio"] == pytest.approx((25 / 18 + 0 + 1 + 2 / 18) / 4)
    assert headline["distinct2"] == distinct_ngram_share([text for text, _ in outputs])


@pytest.mark.parametrize("stop_after", [None, 2])
def test_generation_records_runaway_when_no_eos_came_before_max_new_tokens(tiny_model_dir, stop_after):
    """The tiny random model never emits EOS within 5 tokens: every output runs away. Declaring its third
    greedy token of the first prompt the EOS makes that output stop after two tokens, not a runaway."""
    import torch

    from lorapipe.core.params import EvalParams
    from lorapipe.data.prompt import encode_prompts
    from lorapipe.model.generation import generate
    from lorapipe.model.modeling import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, torch.float32, torch.device("cpu"))
    prompts = encode_prompts(tokenizer, ["Bluepeak Glass Water Bottle", "Tidewater Lamp 12 V"])
    params = params_of(EvalParams, max_new_tokens=5, batch_size=2, do_sample=False)
    first = generate(model, tokenizer, prompts, params)
    assert [(g.runaway, g.new_tokens) for g in first] == [(True, 5), (True, 5)]
    if stop_after is None:
        return
    ids = model.generate(torch.tensor([prompts[0]]), max_new_tokens=5, do_sample=False)[0, len(prompts[0]) :]
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(ids[stop_after]))
    stopped = generate(model, tokenizer, prompts, params)
    length = ids.tolist().index(int(ids[stop_after]))  # where that token first comes
    assert (stopped[0].runaway, stopped[0].new_tokens) == (False, length)
    assert stopped[0].text == tokenizer.decode(ids[:length], skip_special_tokens=True).strip()
