"""Packed rows: how examples are packed into rows of at most seq_len tokens (no cross-example
attention), how rows are stored (data/tokenized/*.parquet, ROW_SCHEMA) and batched (`collate`).

Each example keeps its own position ids (restarting at 0). Given position ids, no attention
mask and no cache, transformers' SDPA/eager/flash attention treat every restart as a new
sequence, so a token never attends to another example (tests/test_packing.py checks the
logits). Labels mask the prompt (completion-only) and every example's first token, so no
example is trained to predict the start of the next one.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lorapipe.core.cli import UserError
from lorapipe.data.prompt import Example

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class PackedRow:
    input_ids: Sequence[int]
    labels: Sequence[int]
    position_ids: Sequence[int]


ROW_SCHEMA = pa.schema([(f.name, pa.list_(pa.int32())) for f in dataclasses.fields(PackedRow)])


def write_rows(rows: Sequence[PackedRow], path: Path) -> None:
    columns = {name: [getattr(r, name) for r in rows] for name in ROW_SCHEMA.names}
    pq.write_table(pa.table(columns, schema=ROW_SCHEMA), path, compression="zstd")


def read_rows(path: Path) -> list[PackedRow]:
    """The packed rows of a tokenize output; one clear error for a file of another shape."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{path}: not a readable Parquet file ({err}); run the tokenize stage (dvc repro)") from None
    if not table.schema.equals(ROW_SCHEMA):
        found, expected = ", ".join(table.schema.names), ", ".join(ROW_SCHEMA.names)
        raise UserError(f"{path}: columns {found}, expected {expected}; rerun tokenize")
    columns = [table[name].to_pylist() for name in ROW_SCHEMA.names]
    return [PackedRow(*values) for values in zip(*columns, strict=True)]


def example_row(example: Example, completion_only: bool) -> PackedRow:
    """One example alone in a row (evaluation scores each reference on its own)."""
    return PackedRow(example.input_ids, example_labels(example, completion_only), range(len(example.input_ids)))


def example_labels(example: Example, completion_only: bool) -> list[int]:
    """Labels for one example: the prompt masked when completion_only, the first token always."""
    labels = list(example.input_ids)
    masked = example.prompt_len if completion_only else 1
    labels[:masked] = [IGNORE] * masked
    return labels


def pack_examples(examples: Sequence[Example], seq_len: int, completion_only: bool) -> list[PackedRow]:
    """Best-fit-decreasing packing: longest examples first, each into the fullest row it fits.

    Examples longer than seq_len are cut to seq_len (the token budgets normally prevent it).
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids), reverse=True)
    rows: list[list[int]] = []  # example indices per row
    free: list[tuple[int, int]] = []  # (free slots, row index), ascending
    for i in order:
        need = min(len(examples[i].input_ids), seq_len)
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            space, row = free.pop(at)
        else:
            space, row = seq_len, len(rows)
            rows.append([])
        rows[row].append(i)
        if space - need > 0:
            bisect.insort(free, (space - need, row))
    packed = []
    for members in rows:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in sorted(members):  # input order inside a row: deterministic, readable
            ex = examples[i]
            ids += ex.input_ids[:seq_len]
            labels += example_labels(ex, completion_only)[:seq_len]
            positions += range(min(len(ex.input_ids), seq_len))
        packed.append(PackedRow(ids, labels, positions))
    return packed


def collate(rows: Sequence[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of packed rows to its longest row; the padding is its own sequence."""
    width = max(len(r.input_ids) for r in rows)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for r in rows:
        pad = width - len(r.input_ids)
        batch["input_ids"].append([*r.input_ids, *[pad_id] * pad])
        batch["labels"].append([*r.labels, *[IGNORE] * pad])
        batch["position_ids"].append([*r.position_ids, *range(pad)])
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
