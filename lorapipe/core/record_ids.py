"""A record's id: the same (title, description) gets the same id in any run, stage or split.

The split stage lists its test records by id (metrics/split_test_ids.txt), the clean stage names its
near-limit records by it, and evaluate gives each scored test sample its id: the PR report matches
records across revisions by these ids alone.
"""

from __future__ import annotations

import hashlib


def record_id(title: str, content: str) -> str:
    """12 hex digits of the record's content."""
    return hashlib.sha256(f"{title}\x1f{content}".encode()).hexdigest()[:12]
