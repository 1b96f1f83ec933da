"""Cleaning rules for raw gzip JSON lines: each line becomes a (title, content) pair or a reason."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from lorapipe.params import CleanParams
from lorapipe.tables import TEXT_SCHEMA

# C0/C1 controls, zero-width and bidi marks, BOM, and lone surrogates; whitespace controls
# (\t \n \r) are folded into spaces by the whitespace rule instead.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ud800-\udfff]"
)
# Its ASCII part, for Arrow's RE2 (after it, the only ASCII whitespace left is \t \n \r and space).
_ASCII_INVISIBLE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


class Reason:
    """Why a line was dropped; the keys of `dropped` in metrics/clean.json."""

    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_TITLE = "empty_title"
    EMPTY_CONTENT = "empty_content"
    TITLE_TOO_SHORT = "title_too_short"
    TITLE_TOO_LONG = "title_too_long"
    CONTENT_TOO_SHORT = "content_too_short"
    CONTENT_TOO_LONG = "content_too_long"

    MALFORMED = (NOT_UTF8, BAD_JSON, NOT_OBJECT, MISSING_FIELD, WRONG_TYPE)


@dataclass(frozen=True)
class Rejected:
    reason: str


def clean_text(text: str) -> str:
    """Unescape HTML entities, NFKC-normalise, drop invisible characters, collapse whitespace."""
    if "&" in text:
        # Twice: the dump holds double-escaped entities such as `&amp;#8217;`.
        text = html.unescape(html.unescape(text))
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


def _length_checks(title_len: Any, content_len: Any, params: CleanParams) -> list[tuple[str, Any]]:
    """The length rules in the order they are checked; lengths are ints or numpy arrays alike."""
    return [
        (Reason.EMPTY_TITLE, title_len == 0),
        (Reason.EMPTY_CONTENT, content_len == 0),
        (Reason.TITLE_TOO_SHORT, title_len < params.min_title_chars),
        (Reason.TITLE_TOO_LONG, title_len > params.max_title_chars),
        (Reason.CONTENT_TOO_SHORT, content_len < params.min_content_chars),
        (Reason.CONTENT_TOO_LONG, content_len > params.max_content_chars),
    ]


def parse_line(line: bytes, params: CleanParams) -> tuple[str, str] | Rejected:
    """One raw line to a cleaned (title, content), or the reason it was dropped: the rules, line by line."""
    fields = read_fields(line, params)
    if isinstance(fields, Rejected):
        return fields
    title, content = clean_text(fields[0]), clean_text(fields[1])
    for reason, failed in _length_checks(len(title), len(content), params):
        if failed:
            return Rejected(reason)
    return title, content


@dataclass(frozen=True)
class CleanedChunk:
    kept: pa.Table  # (title, content) rows kept, in line order
    rejected: list[tuple[int, str]]  # (index of the line in the chunk, reason), in line order


def clean_chunk(lines: Sequence[bytes], params: CleanParams) -> CleanedChunk:
    """`parse_line` over many lines at once, with the same result.

    Parsing stays a Python loop (orjson), but most records are plain ASCII without entities:
    for those, clean_text's rules reduce to removing control characters and collapsing
    whitespace, which Arrow's kernels do in C++ for the whole chunk. Other records go through
    clean_text first; the Arrow pass then leaves them as they are.
    """
    titles: list[str] = []
    contents: list[str] = []
    at: list[int] = []
    rejected: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        fields = read_fields(line, params)
        if type(fields) is Rejected:
            rejected.append((i, fields.reason))
            continue
        title, content = fields
        if not (title.isascii() and content.isascii()) or "&" in title or "&" in content:
            title, content = clean_text(title), clean_text(content)
        titles.append(title)
        contents.append(content)
        at.append(i)
    title_array, content_array = _clean_ascii(titles), _clean_ascii(contents)
    checks = _length_checks(pc.utf8_length(title_array).to_numpy(), pc.utf8_length(content_array).to_numpy(), params)
    failed = np.select([bad for _, bad in checks], range(len(checks)), default=-1)
    rows = np.asarray(at, dtype=np.int64)
    dropped = np.flatnonzero(failed >= 0)
    rejected += [(int(rows[j]), checks[failed[j]][0]) for j in dropped]
    rejected.sort()
    kept = pa.table([title_array, content_array], schema=TEXT_SCHEMA).filter(pa.array(failed < 0))
    return CleanedChunk(kept, rejected)


def _clean_ascii(texts: list[str]) -> pa.Array:
    """clean_text for ASCII text without entities (a no-op on text clean_text already cleaned)."""
    array = pa.array(texts, pa.string())
    array = pc.replace_substring_regex(array, _ASCII_INVISIBLE, "")
    array = pc.replace_substring_regex(array, r"[\t\n\r ]+", " ")
    return pc.utf8_trim(array, " ")
