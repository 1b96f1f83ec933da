"""Cleaning raw gzip JSON lines: each line becomes a (title, content) pair or a reason (lorapipe.data.clean_rules),
and the records nearest each length limit are picked out for the PR report's Data section."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from lorapipe.core.params import CleanParams
from lorapipe.core.record_ids import record_id
from lorapipe.data.clean_rules import LIMITS, NEAR_LIMIT, REASONS, TEXT_CHARS, NearLimit, Reason, length_checks
from lorapipe.data.data_files import TEXT_SCHEMA

# The characters clean_text removes, as (first, last) code points. Whitespace controls (\t \n \r)
# are not among them: the whitespace rule folds those into spaces.
INVISIBLE_RANGES = (
    (0x00, 0x08),  # C0 controls
    (0x0B, 0x0C),
    (0x0E, 0x1F),
    (0x7F, 0x9F),  # DEL and the C1 controls
    (0x061C, 0x061C),  # Arabic letter mark (bidi)
    (0x200B, 0x200F),  # zero-width space, non-joiner, joiner; LRM, RLM (bidi)
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x2064),  # word joiner, invisible operators
    (0x2066, 0x2069),  # bidi isolates
    (0xFEFF, 0xFEFF),  # BOM
    (0xD800, 0xDFFF),  # lone surrogates
)


def _char_class(ranges: Iterable[tuple[int, int]]) -> str:
    """A regex character class of code point ranges, for Python's re (and Arrow's RE2 where all are ASCII:
    RE2 reads \\xNN but not \\uNNNN)."""

    def escape(code: int) -> str:
        return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"

    return "[" + "".join(escape(lo) if lo == hi else f"{escape(lo)}-{escape(hi)}" for lo, hi in ranges) + "]"


_INVISIBLE = re.compile(_char_class(INVISIBLE_RANGES))
# Its ASCII part, for Arrow's RE2 on texts that are ASCII (after it, the only ASCII whitespace left
# is \t \n \r and space); non-ASCII texts get _INVISIBLE in Python.
_ASCII_INVISIBLE = _char_class((lo, min(hi, 0x7F)) for lo, hi in INVISIBLE_RANGES if lo < 0x80)
_ASCII_SPACE_RUN = r"[\t\n\r ]{2,}|[\t\n\r]"  # what `" ".join(text.split())` changes, bar the ends


_EMPTY_CONTENT = REASONS.index(Reason.EMPTY_CONTENT)


@dataclass(frozen=True)
class Rejected:
    reason: str


def clean_text(text: str) -> str:
    """Unescape HTML entities, NFKC-normalise, drop invisible characters, collapse whitespace."""
    return _normalize(_unescape(text)) if "&" in text else _normalize(text)


def _unescape(text: str) -> str:
    # Twice: the dump holds double-escaped entities such as `&amp;#8217;`.
    return html.unescape(html.unescape(text))


def _normalize(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    return " ".join(text.split())


def read_fields(line: bytes, params: CleanParams) -> tuple[str, str] | Rejected:
    """The raw title and content of one line, or why the line is malformed."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected(Reason.NOT_UTF8)
        return Rejected(Reason.BAD_JSON)
    if not isinstance(record, dict):
        return Rejected(Reason.NOT_OBJECT)
    raw_title = record.get(params.title_field)
    raw_content = record.get(params.content_field)
    if raw_title is None or raw_content is None:
        return Rejected(Reason.MISSING_FIELD)
    if not isinstance(raw_title, str) or not isinstance(raw_content, str):
        return Rejected(Reason.WRONG_TYPE)
    return raw_title, raw_content


def parse_line(line: bytes, params: CleanParams) -> tuple[str, str] | Rejected:
    """One raw line to a cleaned (title, content), or the reason it was dropped: the rules, line by line."""
    fields = read_fields(line, params)
    if isinstance(fields, Rejected):
        return fields
    title, content = clean_text(fields[0]), clean_text(fields[1])
    for reason, failed in length_checks(len(title), len(content), params):
        if failed:
            return Rejected(reason)
    return title, content


@dataclass(frozen=True)
class CleanedChunk:
    lines: Sequence[bytes]  # the raw lines, for examples of what was dropped
    kept: pa.Table  # (title, content) rows kept, in line order
    rejected_at: np.ndarray  # indices into `lines` of the dropped lines, ascending
    rejected_why: np.ndarray  # their reasons, as indices into REASONS
    near_limits: list[NearLimit]  # nearest_limits of the chunk's records; `line` counts from 1 in the chunk


def nearness(record: NearLimit) -> tuple[int, int]:
    """How far a record is from its limit, in the order nearest_limits sorts: the longest of the records a
    minimum drops and the shortest it keeps come first (the other way round for a maximum); then line order."""
    field, _, minimum = LIMITS[record.rule]
    chars = record.title_chars if field == "title" else record.content_chars
    return (-chars if minimum != record.kept else chars), record.line


def nearest_limits(records: Iterable[NearLimit], per_side: int = NEAR_LIMIT) -> list[NearLimit]:
    """The `per_side` records nearest each length limit among those it dropped, and among those kept:
    the records that a slightly looser or tighter limit would decide otherwise. By rule, then nearness."""
    sides: dict[tuple[str, bool], list[NearLimit]] = {}
    for record in records:
        sides.setdefault((record.rule, record.kept), []).append(record)
    order = {rule: i for i, rule in enumerate(LIMITS)}
    return [
        record
        for key in sorted(sides, key=lambda key: (order[key[0]], key[1]))
        for record in sorted(sides[key], key=nearness)[:per_side]
    ]


def clean_chunks(
    chunks: Iterable[Sequence[bytes]], params: CleanParams, write: Callable[[pa.Table], None]
) -> Iterator[CleanedChunk]:
    """Clean a stream of chunks of lines, with what `parse_line` gives line by line, each chunk's kept rows
    passed to `write` in order. Parsing stays a Python loop (orjson), but most texts are ASCII once their
    entities are unescaped: for those, clean_text's other rules reduce to removing control characters and
    collapsing whitespace, which Arrow's kernels do in C++ for the whole chunk. Non-ASCII texts get every
    rule in Python; the Arrow pass then leaves them as they are.

    A thread runs the Arrow half of one chunk and writes it while this one parses the next:
    Arrow's kernels and the Parquet writer release the GIL.
    """

    def finish(parsed: _ParsedChunk) -> CleanedChunk:
        chunk = _finish_chunk(parsed, params)
        write(chunk.kept)
        return chunk

    with ThreadPoolExecutor(1) as pool:
        pending = None
        for lines in chunks:
            parsed = _parse_chunk(lines, params)
            if pending is not None:
                yield pending.result()
            pending = pool.submit(finish, parsed)
        if pending is not None:
            yield pending.result()


@dataclass(frozen=True)
class _ParsedChunk:
    lines: Sequence[bytes]
    titles: list[str]
    contents: list[str]
    at: list[int]  # the line of each (title, content)
    dropped: list[tuple[int, int]]  # (line, reason index) of lines dropped while parsing


def _parse_chunk(lines: Sequence[bytes], params: CleanParams) -> _ParsedChunk:
    titles: list[str] = []
    contents: list[str] = []
    at: list[int] = []
    dropped: list[tuple[int, int]] = []
    title_field, content_field, loads = params.title_field, params.content_field, orjson.loads
    for i, line in enumerate(lines):
        # Inlined for speed: the common case of read_fields; anything else asks read_fields why.
        try:
            record = loads(line)
            title = record.get(title_field)
            content = record.get(content_field)
        except (orjson.JSONDecodeError, AttributeError):
            title = content = None
        if type(title) is not str or type(content) is not str:
            dropped.append((i, REASONS.index(read_fields(line, params).reason)))
            continue
        if not content and title[:1].isascii() and title[:1].isalnum():
            dropped.append((i, _EMPTY_CONTENT))  # half the dump; its title surely survives cleaning
            continue
        # What is ASCII once unescaped is left to the Arrow pass; the rest gets every rule here.
        if "&" in title:
            title = _unescape(title)
        if not title.isascii():
            title = _normalize(title)
        if "&" in content:
            content = _unescape(content)
        if not content.isascii():
            content = _normalize(content)
        titles.append(title)
        contents.append(content)
        at.append(i)
    return _ParsedChunk(lines, titles, contents, at, dropped)


def _finish_chunk(parsed: _ParsedChunk, params: CleanParams) -> CleanedChunk:
    titles, contents = _clean_ascii(parsed.titles), _clean_ascii(parsed.contents)
    lengths = {"title": pc.utf8_length(titles).to_numpy(), "content": pc.utf8_length(contents).to_numpy()}
    checks = length_checks(lengths["title"], lengths["content"], params)
    failed = np.select([bad for _, bad in checks], [REASONS.index(reason) for reason, _ in checks], default=-1)
    at = np.asarray(parsed.at, dtype=np.int64)
    rejected_at = np.concatenate([np.array([i for i, _ in parsed.dropped], dtype=np.int64), at[failed >= 0]])
    rejected_why = np.concatenate([np.array([w for _, w in parsed.dropped], dtype=np.int64), failed[failed >= 0]])
    order = np.argsort(rejected_at, kind="stable")
    kept = pa.table([titles, contents], schema=TEXT_SCHEMA).filter(pa.array(failed < 0))
    near = _near_limits(titles, contents, lengths, failed, at)
    return CleanedChunk(parsed.lines, kept, rejected_at[order], rejected_why[order], near)


def _near_limits(
    titles: pa.Array, contents: pa.Array, lengths: dict[str, np.ndarray], failed: np.ndarray, at: np.ndarray
) -> list[NearLimit]:
    """nearest_limits of a chunk's parsed records (the same `nearness` order), picked in numpy: only the few
    picked become objects."""
    picked = []
    kept_rows = np.flatnonzero(failed < 0)
    for rule, (field, _, minimum) in LIMITS.items():
        for kept in (False, True):
            rows = kept_rows if kept else np.flatnonzero(failed == REASONS.index(rule))
            chars = lengths[field][rows].astype(np.int64)
            key = -chars if minimum != kept else chars
            if len(rows) > NEAR_LIMIT:  # sort only the nearest (and their ties): a partition is linear
                near = key <= np.partition(key, NEAR_LIMIT - 1)[NEAR_LIMIT - 1]
                rows, key = rows[near], key[near]
            picked += [(rule, kept, int(i)) for i in rows[np.lexsort((rows, key))[:NEAR_LIMIT]]]
    records = []
    for rule, kept, i in picked:
        title, content = titles[i].as_py(), contents[i].as_py()
        title_chars, content_chars = int(lengths["title"][i]), int(lengths["content"][i])
        texts = {"title": title[:TEXT_CHARS], "content": content[:TEXT_CHARS]}
        line = int(at[i]) + 1
        records.append(NearLimit(rule, kept, line, record_id(title, content), title_chars, content_chars, **texts))
    return records


def _clean_ascii(texts: list[str]) -> pa.Array:
    """clean_text for ASCII text whose entities are unescaped (a no-op on text already cleaned)."""
    array = pa.array(texts, pa.string())
    # Matching is cheaper than replacing, and most texts need neither rule: one pass finds those that might.
    hit = pc.match_substring_regex(array, f"{_ASCII_INVISIBLE}|{_ASCII_SPACE_RUN}")
    if pc.any(hit).as_py():
        fixed = array.filter(hit)
        for pattern, replacement in ((_ASCII_INVISIBLE, ""), (_ASCII_SPACE_RUN, " ")):
            fixed = pc.replace_substring_regex(fixed, pattern, replacement)
        array = pc.replace_with_mask(array, hit, fixed)
    return pc.utf8_trim(array, " ")
