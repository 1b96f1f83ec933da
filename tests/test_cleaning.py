from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorapipe.core.params import CleanParams
from lorapipe.core.record_ids import record_id
from lorapipe.data.clean_rules import LIMITS, REASONS, TEXT_CHARS, NearLimit, Reason, length_decision
from lorapipe.data.cleaning import (
    INVISIBLE_RANGES,
    Rejected,
    clean_chunks,
    clean_text,
    nearest_limits,
    parse_line,
    read_fields,
)
from tests.workspace import params_of

PARAMS = params_of(CleanParams, min_title_chars=3, max_title_chars=40, min_content_chars=10, max_content_chars=80)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("It&#8217;s a mug &amp; a lid", "It’s a mug & a lid"),
        ("double &amp;#8217; escaped", "double ’ escaped"),
        ("&quot;quoted&quot; &lt;b&gt;", '"quoted" <b>'),
        ("ＵＳＢ ｃａｂｌｅ", "USB cable"),  # NFKC folds full-width forms
        ("bell\x07 and nul\x00 chars", "bell and nul chars"),
        ("zero\u200bwidth and bom\ufeff", "zerowidth and bom"),
        ("bidi \u2066iso\u2067la\u2068tes\u2069 and \u061cALM", "bidi isolates and ALM"),
        ("\u202eoverride\u202c, \u200fRLM", "override, RLM"),
        ("  tabs\tand\nnew\r\nlines  ", "tabs and new lines"),
        ("non\u00a0breaking space", "non breaking space"),
        ("caf\u0065\u0301 composed", "café composed"),
        ("", ""),
    ],
)
def test_clean_text_rules(raw, clean):
    assert clean_text(raw) == clean


def line(**record) -> bytes:
    return json.dumps(record).encode() + b"\n"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"title": "no closing brace"\n', Reason.BAD_JSON),
        (b"\n", Reason.BAD_JSON),
        (b'{"title": "caf\xe9", "content": "latin-1 bytes"}\n', Reason.NOT_UTF8),
        (b'["an", "array"]\n', Reason.NOT_OBJECT),
        (b'"just a string"\n', Reason.NOT_OBJECT),
        (line(title="only a title"), Reason.MISSING_FIELD),
        (line(content="only content here"), Reason.MISSING_FIELD),
        (line(title=12345, content="title is a number"), Reason.WRONG_TYPE),
        (line(title="list content", content=["a", "b"]), Reason.WRONG_TYPE),
        (line(title="  \u200b ", content="content that is long enough"), Reason.EMPTY_TITLE),
        (line(title="A good title", content=""), Reason.EMPTY_CONTENT),
        (line(title="A good title", content="&nbsp; \t"), Reason.EMPTY_CONTENT),
        (line(title="ab", content="content that is long enough"), Reason.TITLE_TOO_SHORT),
        (line(title="x" * 41, content="content that is long enough"), Reason.TITLE_TOO_LONG),
        (line(title="A good title", content="too short"), Reason.CONTENT_TOO_SHORT),
        (line(title="A good title", content="y" * 81), Reason.CONTENT_TOO_LONG),
    ],
)
def test_parse_line_rejects_with_reason(raw, reason):
    assert parse_line(raw, PARAMS) == Rejected(reason)


def test_parse_line_keeps_and_cleans_a_good_record():
    raw = line(uid="1", title="Mug &amp; Lid", content="It&#8217;s  a\tfine mug.", target_ind=[1])
    assert parse_line(raw, PARAMS) == ("Mug & Lid", "It’s a fine mug.")


def test_field_names_are_configurable():
    params = params_of(CleanParams, title_field="name", content_field="body", min_content_chars=1)
    assert parse_line(line(name="Blue mug", body="A mug."), params) == ("Blue mug", "A mug.")
    assert parse_line(line(title="Blue mug", content="A mug."), params) == Rejected(Reason.MISSING_FIELD)


def test_length_limits_apply_to_cleaned_text():
    # 12 characters of entities shrink to 2: the limit sees the cleaned text.
    assert parse_line(line(title="&amp;&amp;ab", content="content long enough"), PARAMS) == (
        "&&ab",
        "content long enough",
    )


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parse_line_never_raises_on_random_bytes(raw):
    result = parse_line(raw, PARAMS)
    assert isinstance(result, (Rejected, tuple))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["title", "content", "uid", "other"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=100), st.lists(st.text(max_size=5), max_size=3)),
    )
)
def test_parse_line_never_raises_on_random_records(record):
    result = parse_line(json.dumps(record).encode(), PARAMS)
    if isinstance(result, tuple):
        title, content = result
        assert PARAMS.min_title_chars <= len(title) <= PARAMS.max_title_chars
        assert title == clean_text(title) and content == clean_text(content)  # cleaning is idempotent


# Text that takes every branch of the batched path: ASCII with control characters and
# whitespace runs, entities, non-ASCII spaces and compatibility forms.
PIECES = [
    *"ab Z9_;#\t\n\r\x00\x07\x0b\x1c\x1f\x7f\x85\xa0\u200b\u2003\u2066\u2069\u061c\uff41é",
    "&",
    "&amp;",
    "&#8217;",
]
TEXT = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
RECORD_LINES = st.one_of(
    st.builds(lambda t, c: json.dumps({"title": t, "content": c}, ensure_ascii=False).encode(), TEXT, TEXT),
    st.builds(lambda t, c: json.dumps({"title": t, "content": c}).encode(), TEXT, TEXT),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORD_LINES, max_size=20))
def test_clean_chunks_gives_what_parse_line_gives_line_by_line(lines):
    params = params_of(CleanParams, min_title_chars=2, max_title_chars=30, min_content_chars=3, max_content_chars=40)
    written = []
    (chunk,) = clean_chunks([lines], params, written.append)
    assert written == [chunk.kept]
    results = [parse_line(raw, params) for raw in lines]
    assert chunk.kept.to_pylist() == [{"title": r[0], "content": r[1]} for r in results if not isinstance(r, Rejected)]
    rejected = [(int(i), REASONS[w]) for i, w in zip(chunk.rejected_at, chunk.rejected_why, strict=True)]
    assert rejected == [(i, r.reason) for i, r in enumerate(results) if isinstance(r, Rejected)]
    # The records nearest each length limit, picked in numpy, are those the line-by-line rules pick, and the
    # report's replay of the limits (length_decision) decides each line as the stage did.
    records = []
    for number, (raw, result) in enumerate(zip(lines, results, strict=True), 1):
        fields = read_fields(raw, params)
        if isinstance(fields, Rejected):
            continue
        title, content = map(clean_text, fields)
        decision = length_decision(len(title), len(content), params)
        assert decision == (result.reason if isinstance(result, Rejected) else None)
        rules = LIMITS if decision is None else [decision] if decision in LIMITS else []
        text = {"title": title[:TEXT_CHARS], "content": content[:TEXT_CHARS]}
        ids = record_id(title, content)
        records += [NearLimit(rule, decision is None, number, ids, len(title), len(content), **text) for rule in rules]
    assert chunk.near_limits == nearest_limits(records)


@pytest.mark.parametrize(("first", "last"), INVISIBLE_RANGES)
def test_every_invisible_character_is_removed_on_both_paths(first, last):
    """Each removed range, its ends and middle, in an ASCII and a non-ASCII text, row by row and batched."""
    params = params_of(CleanParams, min_title_chars=1, min_content_chars=1)
    for code in {first, (first + last) // 2, last}:
        char = chr(code)
        for title in (f"Mug{char}Lid", f"Mug{char}Lid é"):
            expected = title.replace(char, "")
            assert clean_text(title) == expected
            if 0xD800 <= code <= 0xDFFF:
                continue  # a lone surrogate makes the line bad JSON to orjson, before any cleaning
            raw = json.dumps({"title": title, "content": "ok"}).encode()
            assert parse_line(raw, params) == (expected, "ok")
            (chunk,) = clean_chunks([[raw]], params, lambda table: None)
            assert chunk.kept.to_pylist() == [{"title": expected, "content": "ok"}]
