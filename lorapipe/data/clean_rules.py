"""Why the clean stage drops a line, and the length limits as one pure function of the lengths and params.

The clean stage applies the limits to whole chunks at once (lorapipe.data.cleaning); the PR report's Data
section applies them to single records, replaying another revision's `clean.*` limits on the records
nearest each limit that the stage writes (NearLimit). No numpy or pyarrow: the report job imports
this without them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lorapipe.core.params import CleanParams


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


REASONS = tuple(v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str))

# The rules a `clean.*` limit decides: rule -> (the cleaned text it measures, its limit's key, a minimum?).
LIMITS = {
    Reason.TITLE_TOO_SHORT: ("title", "min_title_chars", True),
    Reason.TITLE_TOO_LONG: ("title", "max_title_chars", False),
    Reason.CONTENT_TOO_SHORT: ("content", "min_content_chars", True),
    Reason.CONTENT_TOO_LONG: ("content", "max_content_chars", False),
}
NEAR_LIMIT = 5  # records written on each side of each limit: the report shows up to 5 each way
TEXT_CHARS = 300  # of a near-limit record's title and content, as written


def length_checks(title_len: Any, content_len: Any, params: CleanParams) -> list[tuple[str, Any]]:
    """The length rules in the order they are checked; lengths are ints or numpy arrays alike."""
    return [
        (Reason.EMPTY_TITLE, title_len == 0),
        (Reason.EMPTY_CONTENT, content_len == 0),
        (Reason.TITLE_TOO_SHORT, title_len < params.min_title_chars),
        (Reason.TITLE_TOO_LONG, title_len > params.max_title_chars),
        (Reason.CONTENT_TOO_SHORT, content_len < params.min_content_chars),
        (Reason.CONTENT_TOO_LONG, content_len > params.max_content_chars),
    ]


def length_decision(title_chars: int, content_chars: int, params: CleanParams) -> str | None:
    """The rule that drops a cleaned record of these lengths, or None when it is kept."""
    return next((reason for reason, failed in length_checks(title_chars, content_chars, params) if failed), None)


@dataclass(frozen=True)
class NearLimit:
    """A record near a length limit, kept or dropped by its rule: a line of metrics/clean_near_limits.jsonl."""

    rule: str  # the limit's rule (a key of LIMITS)
    kept: bool  # else dropped by `rule`
    line: int  # in the raw file, from 1
    id: str  # record_ids.record_id of the cleaned title and content
    title_chars: int  # of the cleaned texts, in full
    content_chars: int
    title: str  # the cleaned texts, cut to TEXT_CHARS
    content: str

    def decision(self) -> str | None:
        """What this run's cleaning did with it: the rule that dropped it, or None."""
        return None if self.kept else self.rule

    def to_json(self) -> dict:
        return asdict(self)
