"""Functions of the sample and split stages: dedup, seeded sample, grouped split."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_WORD = re.compile(r"\w+")


def title_key(title: str) -> str:
    """What makes two titles the same product: case, punctuation and spacing ignored."""
    return " ".join(_WORD.findall(title.casefold()))


@dataclass(frozen=True)
class Dedup:
    keep: list[int]  # row indices of first occurrences, in input order
    exact_duplicates: int  # same title and content
    title_duplicates: int  # same normalised title, other content


def title_keys(titles: pa.Array | pa.ChunkedArray) -> pa.Array:
    """title_key of every title. For ASCII titles (casefold is lower, \\w is [a-z0-9_]) Arrow's
    kernels give the same key in C++; the others go through title_key."""
    titles = titles.combine_chunks() if isinstance(titles, pa.ChunkedArray) else titles
    # Separators to spaces, then runs of spaces to one: a third faster than one regex that
    # also rewrites every single space.
    keys = pc.replace_substring_regex(pc.ascii_lower(titles), "[^a-z0-9_ ]+", " ")
    keys = pc.utf8_trim(pc.replace_substring_regex(keys, " {2,}", " "), " ")
    other = pc.invert(pc.string_is_ascii(titles))
    rows = np.flatnonzero(other.to_numpy(zero_copy_only=False))
    if len(rows) == 0:
        return keys
    return pc.replace_with_mask(keys, other, pa.array([title_key(t) for t in titles.take(rows).to_pylist()]))


def dedupe_table(table: pq.ParquetFile) -> Dedup:
    """Keep the first record of each normalised title (title_key) of a Parquet (title, content) table and
    count exact (same title and content) and title-only repeats, holding only the title keys in memory.

    Only rows whose key repeats can be duplicates of either kind, so those rows alone are read
    again (a row group at a time) to tell exact from title duplicates.
    """
    keys = title_keys(table.read(columns=["title"]).column("title"))
    rows = pa.array(np.arange(len(keys)))
    firsts = pa.table({"key": keys, "row": rows}).group_by("key", use_threads=False)
    firsts = firsts.aggregate([("row", "min"), ("row", "count")])
    keep = np.sort(firsts["row_min"].to_numpy())
    repeated = firsts.filter(pc.greater(firsts["row_count"], 1))["key"]
    candidates = np.flatnonzero(pc.is_in(keys, value_set=repeated).to_numpy(zero_copy_only=False))
    del keys, rows, firsts
    pairs = take_rows(table, candidates).group_by(["title", "content"], use_threads=False).aggregate([])
    exact = len(candidates) - pairs.num_rows
    return Dedup(keep.tolist(), exact, table.metadata.num_rows - len(keep) - exact)


def take_rows(table: pq.ParquetFile, rows: np.ndarray) -> pa.Table:
    """Rows `rows` (ascending) of a Parquet table, read a row group at a time."""
    return pa.concat_tables([table.schema_arrow.empty_table(), *_row_groups(table, rows)])


def _row_groups(table: pq.ParquetFile, rows: np.ndarray) -> Iterator[pa.Table]:
    # read_row_group frees each group once taken from; iter_batches keeps hundreds of MB.
    offset = 0
    for group in range(table.num_row_groups):
        size = table.metadata.row_group(group).num_rows
        inside = rows[(rows >= offset) & (rows < offset + size)]
        if len(inside):
            yield table.read_row_group(group).take(pa.array(inside - offset))
        offset += size


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
