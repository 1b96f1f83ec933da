"""Cleaning rules for raw gzip JSON lines: each line becomes a (title, content) pair or a reason."""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

import orjson

from lorapipe.params import CleanParams

# C0/C1 controls, zero-width and bidi marks, BOM, and lone surrogates; whitespace controls
# (\t \n \r) are folded into spaces by the whitespace rule instead.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ud800-\udfff]"
)


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


def parse_line(line: bytes, params: CleanParams) -> tuple[str, str] | Rejected:
    """One raw line to a cleaned (title, content), or the reason it was dropped."""
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
    title, content = clean_text(raw_title), clean_text(raw_content)
    if not title:
        return Rejected(Reason.EMPTY_TITLE)
    if not content:
        return Rejected(Reason.EMPTY_CONTENT)
    if len(title) < params.min_title_chars:
        return Rejected(Reason.TITLE_TOO_SHORT)
    if len(title) > params.max_title_chars:
        return Rejected(Reason.TITLE_TOO_LONG)
    if len(content) < params.min_content_chars:
        return Rejected(Reason.CONTENT_TOO_SHORT)
    if len(content) > params.max_content_chars:
        return Rejected(Reason.CONTENT_TOO_LONG)
    return title, content
