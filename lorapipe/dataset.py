"""Pure functions of the sample and split stages: dedup, seeded sample, grouped split."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")


def title_key(title: str) -> str:
    """What makes two titles the same product: case, punctuation and spacing ignored."""
    return " ".join(_WORD.findall(title.casefold()))


@dataclass(frozen=True)
class Dedup:
    keep: list[int]  # row indices of first occurrences, in input order
    exact_duplicates: int  # same title and content
    title_duplicates: int  # same normalised title, other content


def dedupe(titles: Iterable[str], contents: Iterable[str]) -> Dedup:
    """Keep the first record of each normalised title; count exact and title-only repeats.

    Only hashes of the pairs are kept, so `contents` can stream past without being held.
    """
    seen_pairs: set[int] = set()
    seen_titles: set[str] = set()
    keep: list[int] = []
    exact = same_title = 0
    for i, (title, content) in enumerate(zip(titles, contents, strict=True)):
        pair = hash((title, content))
        key = title_key(title)
        if pair in seen_pairs:
            exact += 1
        elif key in seen_titles:
            same_title += 1
        else:
            keep.append(i)
        seen_pairs.add(pair)
        seen_titles.add(key)
    return Dedup(keep, exact, same_title)


def sample_indices(n: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct indices of range(n), in ascending order; all of them when n <= size."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def split_indices(titles: Sequence[str], test_size: float, val_size: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded train/val/test row indices; rows sharing a normalised title share a split."""
    groups: dict[str, list[int]] = {}
    for i, title in enumerate(titles):
        groups.setdefault(title_key(title), []).append(i)
    members = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(members))
    n = len(titles)
    wanted = {"test": round(n * test_size), "val": round(n * val_size)}
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for g in order:
        target = next((name for name, size in wanted.items() if len(parts[name]) < size), "train")
        parts[target].extend(members[g])
    return {name: np.sort(np.array(rows, dtype=np.int64)) for name, rows in parts.items()}
