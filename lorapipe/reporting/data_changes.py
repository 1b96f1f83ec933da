"""What changed in the data between two revisions: the Data section of the PR report and the results page.

    blocks = data_blocks(read_side("main", "main"), read_side(None, "this revision"), full=False)
    markdown(blocks, escape_cell)   # the report's; html(blocks, cell, text) is the results page's

One line when dvc.lock's hashes of the data (raw, clean, sample, split, tokenized) are the same on both
sides. Otherwise, for each data stage whose output changed: its counts base -> this side with the signed
change (the per-reason drop counts that changed among them), and what the change traces back to in the
two dvc.lock files (a params diff, a code change in the stage's deps, new raw data, an upstream output);
then the records that one side's cleaning drops and the other's keeps, with the rule that decided; then
how many test records both sides hold, and what that means for comparing their scores.

All of it comes from small files in git, so the report job needs neither the data nor a DVC remote:
dvc.lock, the data stages' bookkeeping (metrics/*.json), the split's test ids (PATHS["split_test_ids"])
and the clean stage's records nearest each length limit (PATHS["clean_near_limits"]), on which the other
side's `clean.*` limits are replayed (clean_rules.length_decision). Their text is user data: the blocks
hold plain text, and each renderer escapes every piece of it with the escaping its caller passes in.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapipe.core.artifacts import PATHS
from lorapipe.core.cli import UserError
from lorapipe.core.params import CleanParams, flatten, parse_section, parse_yaml
from lorapipe.core.vcs import named_at, read_file, read_json_object
from lorapipe.data.clean_rules import LIMITS, REASONS, NearLimit, length_decision
from lorapipe.eval.eval_files import parse_jsonl
from lorapipe.reporting.compare import pair_up

DVC_LOCK = Path("dvc.lock")
# Each data stage of dvc.yaml: (its data output, its bookkeeping file), as named in dvc.yaml's paths block.
DATA_STAGES = {
    "download": ("raw", "download_json"),
    "clean": ("clean", "clean_json"),
    "sample": ("sample", "sample_json"),
    "split": ("split", "split_json"),
    "tokenize": ("tokenized", "tokenize_json"),
}
DATA_OUTPUTS = tuple(output for output, _ in DATA_STAGES.values())
EXAMPLES = 5  # records shown each way in a pull-request comment; the job summary shows every one found
CELL_CHARS = 160  # of a record's title or description in a table cell
NEAR_LIMITS = PATHS["clean_near_limits"]
TEST_IDS = PATHS["split_test_ids"]


@dataclass(frozen=True)
class Side:
    """One revision's data, as its small git-tracked files tell it."""

    label: str  # as the reader names it: a branch, a short sha, an experiment, "this revision"
    lock: dict[str, dict] | None  # dvc.lock's stages; None without a dvc.lock
    stats: dict[str, dict]  # data stage -> its bookkeeping JSON (absent: not there)
    test_ids: frozenset[str] | None  # the split's test records; None where the file is absent
    near_limits: list[NearLimit] | None  # the clean stage's; None where the file is absent
    scores: list[dict] | None = None  # EVAL_SCORES rows: which test samples the side scored


def read_side(rev: str | None, label: str, scores: list[dict] | None = None) -> Side:
    """The workspace's data files (rev None) or a git revision's; one error line where one is malformed."""
    lock_text = read_file(rev, DVC_LOCK)
    lock = None
    if lock_text is not None:
        parsed = parse_yaml(lock_text.decode("utf-8", "replace"), named_at(DVC_LOCK, rev)) or {}
        stages = parsed.get("stages") if isinstance(parsed, dict) else None
        if not isinstance(stages, dict):
            raise UserError(f"{named_at(DVC_LOCK, rev)}: no `stages` mapping; is it a dvc.lock?")
        lock = stages
    stats = {}
    for stage, (_, name) in DATA_STAGES.items():
        numbers = read_json_object(rev, PATHS[name])
        if numbers is not None:
            stats[stage] = numbers
    ids = read_file(rev, TEST_IDS)
    test_ids = None if ids is None else frozenset(ids.decode("ascii", "replace").split())
    rows = read_file(rev, NEAR_LIMITS)
    near = None
    if rows is not None:
        parsed_rows = parse_jsonl(rows, named_at(NEAR_LIMITS, rev), _problems)
        near = [NearLimit(**{key: row[key] for key in NEAR_LIMIT_FIELDS}) for row in parsed_rows]
    return Side(label, lock, stats, test_ids, near, scores)


# A near-limit line's fields and their types (a later version's extra fields are left alone).
NEAR_LIMIT_FIELDS = {field.name: field.type for field in dataclasses.fields(NearLimit)}


def _problems(row: dict) -> list[str]:
    """What a near-limit line lacks or holds of the wrong type."""
    kinds = {"str": str, "bool": bool, "int": int}
    wrong = [key for key, kind in NEAR_LIMIT_FIELDS.items() if type(row.get(key)) is not kinds[kind]]
    return wrong or ([] if row["rule"] in LIMITS else ["rule"])


# --- what changed, as dvc.lock tells it ---------------------------------------------------------------


def _hash(item: dict) -> str | None:
    """The hash dvc.lock records for a dep or an out: md5, or a cloud file's etag or checksum."""
    return next((str(item[key]) for key in ("md5", "etag", "checksum") if key in item), None)


def out_hash(lock: dict[str, dict], path: Path) -> str | None:
    """The hash dvc.lock records for an output path, or None where no stage has that output."""
    outs = (out for stage in lock.values() for out in stage.get("outs") or [])
    return next((_hash(out) for out in outs if out.get("path") == path.as_posix()), None)


def data_hashes(lock: dict[str, dict]) -> dict[str, str | None]:
    """Each data output's hash in a dvc.lock, by its paths name."""
    return {name: out_hash(lock, PATHS[name]) for name in DATA_OUTPUTS}


def _deps(entry: dict) -> dict[str, str | None]:
    return {dep["path"]: _hash(dep) for dep in entry.get("deps") or []}


def _params(entry: dict) -> dict[str, Any]:
    return flatten({k: v for file in (entry.get("params") or {}).values() for k, v in (file or {}).items()})


def traced_to(stage: str, old_lock: dict[str, dict], new_lock: dict[str, dict]) -> list[str]:
    """What differs in the two dvc.lock entries of `stage`: params, code and input deps, the command."""
    old, new = old_lock.get(stage), new_lock.get(stage)
    if old is None or new is None:
        return [f"the stage is in one dvc.lock only ({'new' if old is None else 'removed'})"]
    causes = []
    old_params, new_params = _params(old), _params(new)
    changed = [k for k in sorted(old_params.keys() | new_params.keys()) if old_params.get(k) != new_params.get(k)]
    causes += [f"params: {k} {_value(old_params.get(k))} -> {_value(new_params.get(k))}" for k in changed]
    producers = {out["path"]: name for name, entry in new_lock.items() for out in entry.get("outs") or []}
    old_deps, new_deps = _deps(old), _deps(new)
    for path in sorted(old_deps.keys() | new_deps.keys()):
        if path not in old_deps or path not in new_deps:
            causes.append(f"dep {'added' if path not in old_deps else 'removed'}: {path}")
        elif old_deps[path] != new_deps[path]:
            producer = producers.get(path)
            if producer == "download":
                causes.append(f"new raw data: {path}")
            elif producer:
                causes.append(f"input: {path} ({producer})")
            else:
                causes.append(f"code: {path}" if path.endswith(".py") else f"file: {path}")
    if old.get("cmd") != new.get("cmd"):
        causes.append("command (dvc.yaml)")
    if not causes:
        same = "the file at data.url changed" if stage == "download" else "a step that is not deterministic"
        causes.append(f"same params, code and inputs ({same}, or other library versions)")
    return causes


def _value(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value) if isinstance(value, str) and not value else str(value)


# --- counts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """One figure of a data stage's bookkeeping."""

    label: str
    keys: tuple[str, ...]  # where it is in the stage's JSON
    always: bool = False  # the stage's headline: shown even when unchanged
    of: tuple[str, ...] = ()  # a share: the figure at `keys` divided by the one at `of`
    percent: bool = False  # shown as a percentage, its change in points

    def value(self, stats: dict | None) -> float | None:
        number = _at(stats, self.keys)
        if not self.of or number is None:
            return number
        whole = _at(stats, self.of)
        return number / whole if whole else None


def _at(tree: Any, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree if isinstance(tree, (int, float)) and not isinstance(tree, bool) else None


def _cut_share(label: str, key: str) -> Count:
    return Count(label, ("train", key), always=True, of=("train", "examples"), percent=True)


COUNTS = {
    "download": [Count("raw file bytes", ("bytes",), always=True)],
    "clean": [
        Count("lines read", ("records_read",), always=True),
        Count("kept", ("kept",), always=True),
        *(Count(f"dropped: {reason}", ("dropped", reason)) for reason in REASONS),
    ],
    "sample": [
        Count("records in", ("records_in",), always=True),
        Count("exact duplicates", ("exact_duplicates",)),
        Count("title duplicates", ("title_duplicates",)),
        Count("unique", ("unique",)),
        Count("sampled", ("sampled",), always=True),
    ],
    "split": [Count(part, (part,), always=True) for part in ("train", "val", "test")],
    "tokenize": [
        Count("train examples", ("train", "examples"), always=True),
        Count("train tokens", ("train", "tokens")),
        Count("train rows", ("train", "rows")),
        _cut_share("prompts cut (train)", "prompt_truncated"),
        _cut_share("descriptions cut (train)", "response_truncated"),
        Count("packing efficiency", ("train", "packing_efficiency"), percent=True),
        Count("val examples", ("val", "examples")),
    ],
}


def count_cells(count: Count, old: dict | None, new: dict | None, full: bool = False) -> list[str] | None:
    """[label, base, this side, change] of a count; None when it is unchanged and neither a headline nor
    `full`. A count missing on one side is a dash; a drop reason a side's clean.json lacks counts 0."""
    a, b = (count.value(stats) if stats is not None else None for stats in (old, new))
    if count.keys[0] == "dropped":
        a, b = (0 if value is None and stats is not None else value for value, stats in ((a, old), (b, new)))
    if a == b and not (count.always or full):
        return None
    return [count.label, _number(a, count.percent), _number(b, count.percent), _change(a, b, count.percent)]


def _change(old: float | None, new: float | None, percent: bool) -> str:
    if old is None or new is None:
        return "—"
    if new == old:
        return "0"
    return f"{(new - old) * 100:+.1f} pts" if percent else f"{new - old:+,}"


def _number(value: float | None, percent: bool) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" if percent else f"{value:,}"


# --- examples: what one side's cleaning drops and the other's keeps ------------------------------------


@dataclass(frozen=True)
class Flip:
    """A record that one side's cleaning keeps and the other's drops."""

    record: NearLimit  # its texts and lengths (this side's copy where both have it)
    old: str | None  # the rule that drops it on the base side, None where kept
    new: str | None


def clean_params(lock: dict[str, dict] | None, label: str) -> CleanParams | None:
    """The `clean` section a side's clean stage ran with, from its dvc.lock; None where it is not there."""
    section = ((lock or {}).get("clean", {}).get("params") or {}).get("params.yaml", {}).get("clean")
    if section is None:
        return None
    try:
        return parse_section(CleanParams, section, source=f"{DVC_LOCK} of {label}")
    except UserError:
        return None  # limits of another version: nothing to replay


def flips(old: Side, new: Side) -> tuple[list[Flip], list[Flip]]:
    """(records this side drops that the base kept, records this side keeps that the base dropped), among
    both sides' records nearest each length limit. A side's decision is its own file's where the record is
    in it, else its limits replayed on the record's lengths; a record with no decision on a side is left out."""
    limits = clean_params(old.lock, old.label), clean_params(new.lock, new.label)
    known: list[dict[str, str | None]] = [{}, {}]
    records: dict[str, NearLimit] = {}
    for side, rows in enumerate((old.near_limits or [], new.near_limits or [])):
        for row in rows:
            known[side][row.id] = row.decision()
            records[row.id] = row  # this side's copy last: the one shown
    found = []
    for record_id, record in records.items():
        decisions = []
        for side in (0, 1):
            if record_id in known[side]:
                decisions.append(known[side][record_id])
            elif limits[side] is not None:
                decisions.append(length_decision(record.title_chars, record.content_chars, limits[side]))
        if len(decisions) == 2 and (decisions[0] is None) != (decisions[1] is None):
            found.append(Flip(record, *decisions))
    dropped = sorted((f for f in found if f.new), key=lambda f: _measured(f.record, f.new))
    kept = sorted((f for f in found if f.old), key=lambda f: _measured(f.record, f.old))
    return dropped, kept


def _measured(record: NearLimit, rule: str | None) -> tuple[int, int]:
    field = LIMITS[rule][0] if rule in LIMITS else "content"
    return (record.title_chars if field == "title" else record.content_chars), record.line


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """`count` items spread evenly over a sorted list, its ends included: the range of what changed."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else [items[0]]


def _cut(text: str, chars: int) -> str:
    """A record's text cut to CELL_CHARS, with an ellipsis where it is not whole (the file holds TEXT_CHARS)."""
    return text[:CELL_CHARS] + "…" if len(text) > CELL_CHARS or chars > len(text) else text


def rule_text(rule: str | None, record: NearLimit, limits: CleanParams | None, other: CleanParams | None) -> str:
    """`content_too_short: content 143 chars, clean.min_content_chars 150 (other side 20)`."""
    if rule not in LIMITS:
        return str(rule)
    field, key, _ = LIMITS[rule]
    chars = record.title_chars if field == "title" else record.content_chars
    text = f"{rule}: {field} {chars:,} chars"
    if limits is not None:
        text += f", clean.{key} {getattr(limits, key):,}"
        if other is not None and getattr(other, key) != getattr(limits, key):
            text += f" (other side {getattr(other, key):,})"
    return text


# --- the section ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    head: list[str]
    rows: list[list[str]]
    numeric: tuple[int, ...] = ()  # columns aligned right


@dataclass(frozen=True)
class Heading:
    text: str


Block = str | Table | Heading  # a str is a paragraph
HEADING = "Data"  # the report's section heading (the results page has its own)


def data_blocks(old: Side, new: Side, full: bool, compared: str = "the scores below") -> list[Block]:
    """The Data section: one line when the data is the same; with `full` (a job summary, an artifact),
    every count and every example found, else what fits a pull-request comment. `compared` names what the
    test split's overlap bears on."""
    if old.lock is None or new.lock is None:
        missing = old.label if old.lock is None else new.label
        return [f"Data: no comparison, {missing} has no {DVC_LOCK} (the pipeline has not run there)."]
    old_hashes, new_hashes = data_hashes(old.lock), data_hashes(new.lock)
    changed = [name for name in DATA_OUTPUTS if old_hashes[name] != new_hashes[name]]
    present = [name for name in DATA_OUTPUTS if old_hashes[name] or new_hashes[name]]
    if not changed:
        absent = [name for name in DATA_OUTPUTS if name not in present]
        note = f" ({', '.join(absent)}: in neither {DVC_LOCK})" if absent else ""
        return [f"Data unchanged: same hashes for {', '.join(present)}{note}."]
    same = [name for name in present if name not in changed]
    intro = f"Data changed against {old.label} (the hashes in {DVC_LOCK}): {_listed(changed)} differ"
    blocks: list[Block] = [
        intro + (f"; {_listed(same)} {'is' if len(same) == 1 else 'are'} the same." if same else ".")
    ]
    blocks.append(counts_table(old, new, full))
    if old_hashes["clean"] != new_hashes["clean"]:
        blocks += examples(old, new, full)
    blocks.append(overlap(old, new, old_hashes["split"] == new_hashes["split"], compared))
    return blocks


def _listed(names: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def counts_table(old: Side, new: Side, full: bool) -> Table:
    """Per data stage whose output changed (every stage with `full`): its counts and what they trace to."""
    rows = []
    for stage, (output, _) in DATA_STAGES.items():
        hashes = out_hash(old.lock, PATHS[output]), out_hash(new.lock, PATHS[output])
        unchanged = hashes[0] == hashes[1]
        if unchanged and not (full and hashes[0]):
            continue
        counts = [count_cells(c, old.stats.get(stage), new.stats.get(stage), full) for c in COUNTS[stage]]
        shown = [cells for cells in counts if cells is not None] or [["—", "—", "—", "—"]]
        why = "unchanged" if unchanged else "; ".join(traced_to(stage, old.lock, new.lock))
        for i, cells in enumerate(shown):
            rows.append([stage if i == 0 else "", *cells, why if i == 0 else ""])
    return Table(["stage", "count", old.label, new.label, "change", "traced to"], rows, numeric=(2, 3, 4))


def examples(old: Side, new: Side, full: bool) -> list[Block]:
    """The records one side's cleaning drops and the other's keeps, with the rule that decided."""
    limits = clean_params(old.lock, old.label), clean_params(new.lock, new.label)
    lacking = [side.label for side in (old, new) if side.near_limits is None]
    if len(lacking) == 2:
        return [
            f"Examples of what the cleaning now drops or keeps need {NEAR_LIMITS} on either side: "
            "run the clean stage of this version there."
        ]
    dropped, kept = flips(old, new)
    blocks: list[Block] = []
    for title, found, rule_side in (
        (f"Dropped by {new.label}'s cleaning, kept by {old.label}'s", dropped, 1),
        (f"Kept by {new.label}'s cleaning, dropped by {old.label}'s", kept, 0),
    ):
        shown = found if full else spread(found, EXAMPLES)
        if not found:
            blocks.append(f"{title}: none among the records nearest each length limit.")
            continue
        count = f"{len(shown)} of the {len(found)}" if len(shown) < len(found) else f"the {len(found)}"
        more = "; the job summary lists them all" if len(shown) < len(found) else ""
        blocks.append(Heading(f"{title}: {count} found among the records nearest each length limit{more}"))
        rows = []
        for flip in shown:
            rule = flip.new if rule_side else flip.old
            text = rule_text(rule, flip.record, limits[rule_side], limits[1 - rule_side])
            record = flip.record
            texts = [_cut(record.title, record.title_chars), _cut(record.content, record.content_chars)]
            rows.append([f"{record.line:,}", text, *texts])
        blocks.append(Table(["raw line", "rule", "title", "description"], rows, numeric=(0,)))
    if lacking:
        blocks.append(f"{lacking[0]} has no {NEAR_LIMITS} (older than it): only the other side's records are shown.")
    code = [c for c in traced_to("clean", old.lock, new.lock) if c.startswith(("code:", "dep "))]
    if code:
        blocks.append(
            "The cleaning code changed too: a side's decision on a record not in its own file replays its limits "
            "on the lengths the other side's code measured; what the code change alone drops shows only by "
            "running both cleanings on the raw data."
        )
    return blocks


def overlap(old: Side, new: Side, same_split: bool, compared: str) -> str:
    """How many test records both sides hold, and what that means for `compared`."""
    if same_split:
        size = _at(new.stats.get("split"), ("test",))
        text = f"Test split: the same on both sides{f' ({size:,} records)' if size is not None else ''}."
    elif old.test_ids is None or new.test_ids is None:
        lacking = old.label if old.test_ids is None else new.label
        text = (
            f"Test split: changed; {lacking} has no {TEST_IDS} (older than it), so how many test records both "
            "hold is unknown."
        )
    else:
        shared = len(old.test_ids & new.test_ids)
        text = (
            f"Test split: {shared:,} records in both, {len(old.test_ids) - shared:,} only in {old.label}, "
            f"{len(new.test_ids) - shared:,} only in {new.label}."
        )
    return f"{text} {pairing(old, new, same_split, compared)}"


def pairing(old: Side, new: Side, same_split: bool, compared: str) -> str:
    """What the test records both sides scored mean for comparing their scores (compare.pair_up's rule)."""
    if old.scores is None or new.scores is None:
        return f"Compared sample by sample ({compared}), two runs are paired only over the test samples both scored."
    scored = len({row["id"] for row in old.scores} & {row["id"] for row in new.scores})
    _, pairs, paired = pair_up(old.scores, new.scores)
    if paired and same_split:
        return f"So {compared} are paired: each of the {len(pairs):,} test samples both scored against itself."
    if paired:
        return (
            f"The {len(pairs):,} test samples scored on one side were all scored on the other too, so {compared} "
            "are still paired over them."
        )
    shared = f"Only {scored:,} of the" if scored else "None of the"
    return (
        f"{shared} {len(new.scores):,} test samples {new.label} scored {'was' if not scored else 'were'} scored by "
        f"{old.label} too, so {compared} are unpaired: each side is resampled on its own, the intervals are "
        "wider, and part of any change comes from the change of test samples, not of the model."
    )


# --- rendering ----------------------------------------------------------------------------------------


def markdown(blocks: list[Block], escape: Callable[[str, int], str]) -> str:
    """The blocks as markdown, every piece of text through `escape` (the report's escape_cell); a section
    under its heading, but for the one line of unchanged data."""
    out = [f"### {HEADING}\n"] if len(blocks) > 1 else []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"#### {escape(block.text, 300)}\n")
        elif isinstance(block, Table):
            rule = "|".join("---:" if i in block.numeric else "---" for i in range(len(block.head)))
            lines = ["| " + " | ".join(escape(h, 80) for h in block.head) + " |", f"|{rule}|"]
            lines += ["| " + " | ".join(escape(c, 400) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines) + "\n")
        else:
            out.append(escape(block, 2000) + "\n")
    return "\n".join(out)


def html(blocks: list[Block], cell: Callable[[Any], str], text: Callable[[str], str]) -> str:
    """The blocks as HTML: table cells through `cell` (a `<td>`), other text through `text` (escaped)."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h4>{text(block.text)}</h4>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{text(h)}</th>" for h in block.head)
            rows = ["<tr>" + "".join(map(cell, row)) + "</tr>" for row in block.rows]
            out.append("\n".join(["<table>", f"<tr>{head}</tr>", *rows, "</table>"]))
        else:
            out.append(f"<p>{text(block)}</p>")
    return "\n".join(out)
