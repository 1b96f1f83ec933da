"""A stage's numbers on disk: a few headline figures as DVC metrics, everything else in a details file.

DVC lists every number of every metrics file as a column of `dvc exp show` and a row of `dvc metrics diff`.
The headline files (train.json, eval.json) hold only what a reviewer compares across experiments: the
validation loss, and the tuned model's BLEU and ROUGE-L with their change against the base model. The details
files beside them (train_details.json, eval_details.json: plain outputs, git-tracked, not metrics) hold
the whole record, headline included: speed, memory, device and versions, every score of both models,
output health. The report, the results page and the summary read the details.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_JSON, TRAIN_DETAILS, TRAIN_JSON
from lorapipe.core.outputs import write_json
from lorapipe.core.params import flatten
from lorapipe.core.vcs import read_json_object

TRAIN_HEADLINE = ("val_loss",)  # the training loss is noisier and in the details
EVAL_HEADLINE = ("tuned.bleu", "tuned.rougeL", "delta.bleu", "delta.rougeL")
DETAILS = {TRAIN_JSON: TRAIN_DETAILS, EVAL_JSON: EVAL_DETAILS}  # each headline file -> its details file


def headline(numbers: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The dotted `keys` of `numbers`, nested as in `numbers` ("tuned.bleu" -> {"tuned": {"bleu": ...}})."""
    picked: dict[str, Any] = {}
    for key in keys:
        *sections, name = key.split(".")
        source, target = numbers, picked
        for section in sections:
            source, target = source[section], target.setdefault(section, {})
        target[name] = source[name]
    return picked


def write_numbers(metrics: Path, details: Path, numbers: dict[str, Any], keys: Iterable[str]) -> None:
    """The details file first: a run stopped between the two writes leaves no headline without its record."""
    write_json(details, numbers)
    write_json(metrics, headline(numbers, keys))


def read_record(metrics: Path, rev: str | None = None) -> dict[str, Any] | None:
    """A stage's whole record in the workspace (rev None) or at `rev`: its details file; at a revision made
    before the details files existed, its metrics file, which then held the whole record."""
    details = read_json_object(rev, DETAILS[metrics])
    return details if details is not None else read_json_object(rev, metrics)


def records_diff(old_rev: str | None, new_rev: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Every figure that differs between two revisions' records (None: the workspace), in the shape of
    `dvc metrics diff --json`: {details file: {dotted key: {"old", "new", "diff"}}}; "diff" for numbers only."""
    diff: dict[str, dict[str, dict[str, Any]]] = {}
    for metrics, details in DETAILS.items():
        old, new = (flatten(read_record(metrics, rev) or {}) for rev in (old_rev, new_rev))
        if changed := key_changes(old, new):
            diff[str(details)] = changed
    return diff


def key_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each dotted key whose value differs between two flattened records, as a row of `dvc metrics/params diff
    --json`: {key: {"old", "new", "diff"}}, "diff" for numbers only; a key one side lacks is None there."""
    changes = {}
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        change: dict[str, Any] = {"old": before, "new": after}
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after)):
            change["diff"] = after - before
        changes[key] = change
    return changes
