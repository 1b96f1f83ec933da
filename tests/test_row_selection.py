from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorapipe.data.data_files import TEXT_SCHEMA
from lorapipe.data.row_selection import (
    Dedup,
    dedupe_table,
    sample_indices,
    split_indices,
    take_rows,
    title_key,
    title_keys,
)


def dedupe_row_by_row(titles: list[str], contents: list[str]) -> Dedup:
    """The rule, row by row: the oracle that `dedupe_table` (what the sample stage runs) must equal."""
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


def test_title_key_ignores_case_punctuation_and_spacing():
    assert title_key("Acme Water Bottle, 750 ml - Blue") == title_key("ACME  water bottle 750 ML blue!")
    assert title_key("Acme Bottle") != title_key("Acme Bottles")


def test_dedupe_counts_exact_and_title_duplicates_and_keeps_first(tmp_path):
    titles = ["Blue Mug", "Red Mug", "blue mug!", "Blue Mug", "Green Mug"]
    contents = ["a", "b", "c", "a", "d"]
    pq.write_table(pa.table({"title": titles, "content": contents}, TEXT_SCHEMA), tmp_path / "t.parquet")
    result = dedupe_table(pq.ParquetFile(tmp_path / "t.parquet"))
    assert result.keep == [0, 1, 4]
    assert result.exact_duplicates == 1  # row 3 repeats row 0 exactly
    assert result.title_duplicates == 1  # row 2 is the same product as row 0


def test_sample_is_seeded_sorted_and_keeps_all_when_short():
    a, b = sample_indices(1000, 100, seed=7), sample_indices(1000, 100, seed=7)
    assert list(a) == list(b) and len(set(a.tolist())) == 100 and list(a) == sorted(a)
    assert list(sample_indices(1000, 100, seed=8)) != list(a)
    assert list(sample_indices(5, 100, seed=7)) == [0, 1, 2, 3, 4]


def test_split_sizes_and_determinism():
    titles = [f"Product {i}" for i in range(1000)]
    parts = split_indices(titles, test_size=0.2, val_size=0.05, seed=1)
    assert {k: len(v) for k, v in parts.items()} == {"train": 750, "val": 50, "test": 200}
    assert sorted(i for v in parts.values() for i in v.tolist()) == list(range(1000))
    again = split_indices(titles, test_size=0.2, val_size=0.05, seed=1)
    assert all((parts[k] == again[k]).all() for k in parts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_title_in_two_splits(seed):
    # Near-duplicate titles (same key) must land together, whatever the seed.
    titles = [f"Product {i % 300}" + ("!" if i % 2 else "") for i in range(900)]
    parts = split_indices(titles, test_size=0.3, val_size=0.1, seed=seed)
    keys = {name: {title_key(titles[i]) for i in rows} for name, rows in parts.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"] and not keys["val"] & keys["test"]


WORDS = st.sampled_from(["Mug", "mug", "MUG!", "Blue", "blue-", "_x", "9", "Straße", "STRASSE", "ｍｕｇ", "é", " ", ""])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.lists(WORDS, max_size=4).map(" ".join), st.sampled_from(["a", "b", "c"])), max_size=40),
    st.integers(1, 7),
)
def test_dedupe_table_equals_the_rule_row_by_row(tmp_path_factory, rows, row_group):
    titles, contents = [t for t, _ in rows], [c for _, c in rows]
    path = tmp_path_factory.mktemp("dedupe") / "t.parquet"
    pq.write_table(pa.table({"title": titles, "content": contents}, TEXT_SCHEMA), path, row_group_size=row_group)
    assert title_keys(pa.array(titles, pa.string())).to_pylist() == [title_key(t) for t in titles]
    assert dedupe_table(pq.ParquetFile(path)) == dedupe_row_by_row(titles, contents)
    kept = dedupe_table(pq.ParquetFile(path)).keep
    assert take_rows(pq.ParquetFile(path), np.array(kept, dtype=np.int64)).to_pylist() == [
        {"title": titles[i], "content": contents[i]} for i in kept
    ]
