"""Output health: the failure modes of small models that BLEU and ROUGE hardly show.

A greedy decoder loops on a phrase until max_new_tokens, a model echoes the title and stops, or it
writes "1000L" and "5-year warranty" that neither the title nor the real description says. These
are measured per sample beside BLEU/ROUGE and never mixed into them. The definitions (also in the
README, "Output health"):

- words: the lower-cased runs of letters, digits and underscores (`\\w+`, Unicode) of a text.
- runaway: the generation reached eval.max_new_tokens without emitting EOS (recorded while decoding,
  lorapipe.model.generation; the text alone cannot tell).
- repeat4: 1 - unique / total over the output's word 4-grams; 0 when it has fewer than 4 words.
- echo: the output is empty, or every word of it is a word of the title (it adds nothing).
- length_ratio: the output's words / the reference's words (a reference of no words counts as one).
- unsupported_figures: the output's figures (a number with an optional unit: `1000L`, `5-year`, `12 V`,
  `500 ml`, `20%`) that neither the title nor the reference supports. A figure is supported when the
  title or the reference has the same number with the same unit, or with no unit on either side.
  Numbers are ASCII digits; `1,000` is 1000; units are those of UNITS, spelled as in UNIT_ALIASES.
- distinct2 (over all outputs of a model): unique word bigrams / all word bigrams, pooled over the
  outputs (a model that writes one template for every product scores low); 0 without any bigram.

Pure Python and numpy, linear in the outputs' length, no model: the report job imports it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

WORD = re.compile(r"\w+")
REPEAT_N = 4
DISTINCT_N = 2

# Each unit, canonical name first, then the spellings that mean it (lower case).
UNITS = {
    "mm": ("millimeter", "millimeters", "millimetre", "millimetres"),
    "cm": ("centimeter", "centimeters", "centimetre", "centimetres"),
    "m": ("meter", "meters", "metre", "metres"),
    "km": (),
    "inch": ("inches", '"'),  # not "in": the word
    "ft": ("foot", "feet"),
    "mg": (),
    "g": ("gram", "grams"),
    "kg": ("kilogram", "kilograms"),
    "oz": ("ounce", "ounces"),
    "lb": ("lbs", "pound", "pounds"),
    "ml": ("milliliter", "milliliters", "millilitre", "millilitres"),
    "l": ("liter", "liters", "litre", "litres"),
    "gal": ("gallon", "gallons"),
    "v": ("volt", "volts"),
    "w": ("watt", "watts"),
    "kw": (),
    "mah": (),
    "hz": (),
    "khz": (),
    "mhz": (),
    "ghz": (),
    "mb": (),
    "gb": (),
    "tb": (),
    "mp": ("megapixel", "megapixels"),
    "%": ("percent",),
    "pcs": ("pc", "piece", "pieces"),
    "pack": ("packs",),
    "count": ("ct",),
    "year": ("years", "yr", "yrs"),
    "month": ("months",),
    "day": ("days",),
    "hour": ("hours", "hr", "hrs", "h"),
    "min": ("mins", "minute", "minutes"),
}
UNIT_ALIASES = {spelling: unit for unit, spellings in UNITS.items() for spelling in (unit, *spellings)}
_UNIT = "|".join(re.escape(s) for s in sorted(UNIT_ALIASES, key=len, reverse=True))
# A number not inside a word or another number, then an optional unit after a space or a hyphen;
# neither may run on into letters, so model numbers such as WH-1000XM4 are no figure.
FIGURE = re.compile(
    rf"(?<![\w.,])(?P<number>[0-9]+(?:[.,][0-9]+)*)(?:[ -]?(?P<unit>{_UNIT}))?(?![^\W\d_])(?!\d)", re.IGNORECASE
)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(text: str, n: int = REPEAT_N) -> float:
    """1 - unique / total over the word n-grams of `text`; 0 without any."""
    grams = ngrams(words(text), n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def is_echo(text: str, title: str) -> bool:
    """The output is empty, or has no word that is not a word of the title."""
    return set(words(text)) <= set(words(title))


def length_ratio(text: str, reference: str) -> float:
    return len(words(text)) / max(len(words(reference)), 1)


def _number(digits: str) -> str:
    """`1,000` -> `1000`, `2,5` -> `2.5`: a comma before exactly three digits groups thousands."""
    return re.sub(r",(?=\d{3}(?!\d))", "", digits).replace(",", ".")


def figures(text: str) -> list[tuple[str, str, str]]:
    """(as written, number, canonical unit or "") of each figure in `text`, in order."""
    found = []
    for match in FIGURE.finditer(text):
        unit = match["unit"]
        found.append((match[0], _number(match["number"]), UNIT_ALIASES[unit.lower()] if unit else ""))
    return found


def unsupported_figures(text: str, title: str, reference: str) -> list[str]:
    """The figures of `text`, as written, that neither `title` nor `reference` supports."""
    sources = figures(title) + figures(reference)

    def supported(number: str, unit: str) -> bool:
        return any(n == number and (u == unit or not u or not unit) for _, n, u in sources)

    return [written for written, number, unit in figures(text) if not supported(number, unit)]


def sample_health(text: str, title: str, reference: str, runaway: bool) -> dict[str, Any]:
    """One output's health fields, as eval_scores.jsonl keeps them (definitions: the module's docstring)."""
    return {
        "runaway": bool(runaway),
        "repeat4": repeated_ngram_rate(text),
        "echo": is_echo(text, title),
        "length_ratio": length_ratio(text, reference),
        "unsupported_figures": unsupported_figures(text, title, reference),
    }


class DistinctNgrams:
    """distinct-n of any multiset of `texts`, given as positions: the report's bootstrap resamples them.

    Called with an array of (1, ..., samples) positions into `texts`, it returns (...) shares: the
    n-grams of the chosen texts, pooled (a text drawn twice counts its n-grams twice, none new).
    """

    def __init__(self, texts: Sequence[str], n: int = DISTINCT_N) -> None:
        grams = [ngrams(words(text), n) for text in texts]
        ids: dict[tuple[str, ...], int] = {}
        per_text = [sorted({ids.setdefault(g, len(ids)) for g in text_grams}) for text_grams in grams]
        self.gram_ids = np.asarray([i for unique in per_text for i in unique], dtype=np.int64)
        self.gram_text = np.repeat(np.arange(len(texts)), [len(unique) for unique in per_text])
        self.totals = np.asarray([len(g) for g in grams], dtype=float)
        self.texts, self.vocabulary = len(texts), len(ids)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        chosen = np.asarray(positions)[0]
        flat = chosen.reshape(-1, chosen.shape[-1])
        shares = np.empty(len(flat))
        for row, picks in enumerate(flat):
            weights = np.bincount(picks.astype(np.int64), minlength=self.texts)
            present = np.bincount(self.gram_ids, weights=weights[self.gram_text], minlength=self.vocabulary) > 0
            total = weights @ self.totals
            shares[row] = present.sum() / total if total else 0.0
        return shares.reshape(chosen.shape[:-1])


def distinct_ngram_share(texts: Sequence[str], n: int = DISTINCT_N) -> float:
    """Unique / all word n-grams pooled over `texts` (distinct2 with n=2); 0 without any n-gram."""
    return float(DistinctNgrams(texts, n)(np.arange(len(texts))[None]))


# The headline health metrics that are a mean over samples, each of one value of a `sample_health` row:
# a share for the flags (runaway, unsupported: at least one unsupported figure, echo).
MEAN_HEALTH: dict[str, Callable[[dict[str, Any]], float]] = {
    "runaway": lambda sample: float(sample["runaway"]),
    "repeat4": lambda sample: sample["repeat4"],
    "length_ratio": lambda sample: sample["length_ratio"],
    "unsupported": lambda sample: float(bool(sample["unsupported_figures"])),
    "echo": lambda sample: float(sample["echo"]),
}


def health_scores(samples: Sequence[dict[str, Any]], texts: Sequence[str]) -> dict[str, float]:
    """A model's headline health: MEAN_HEALTH over its `sample_health` rows, and distinct2 over its `texts`."""
    means = {name: float(np.mean([value(s) for s in samples])) for name, value in MEAN_HEALTH.items()}
    return {**means, "distinct2": distinct_ngram_share(texts)}
