"""The Data section of the PR report and the results page. Its logic on hand-made dvc.lock entries, bookkeeping
and near-limit records: one line for the same data, what each change traces to, the counts that changed, the
records a changed rule flips, what the test split's overlap means for the scores. Then the report of a real
pull request that tightens a cleaning rule (the `stricter_cleaning` repo), and its screenshot; the same data
(a lora.r experiment) is checked in tests/test_report.py and tests/test_results_page.py."""

from __future__ import annotations

import copy
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lorapipe.core.artifacts import PATHS
from lorapipe.core.cli import UserError
from lorapipe.core.params import CleanParams
from lorapipe.core.record_ids import record_id
from lorapipe.data.clean_rules import NearLimit, Reason
from lorapipe.data.cleaning import Rejected, parse_line
from lorapipe.reporting.data_changes import (
    COUNTS,
    EXAMPLES,
    Side,
    Table,
    count_cells,
    data_blocks,
    flips,
    html,
    markdown,
    overlap,
    read_side,
    traced_to,
)
from lorapipe.reporting.report import escape_cell
from lorapipe.reporting.results_page import cell, text
from tests.browser import save_screenshot
from tests.workspace import BIDI_CONTROL, HOSTILE, default_params, params_of, ran, sh, table_rows

CLEAN = default_params()["clean"]  # min_content_chars 20


def path(name: str) -> str:
    return PATHS[name].as_posix()


def entry(deps: dict[str, str], params: dict, outs: dict[str, str], cmd: str = "python stages/x.py") -> dict:
    """A dvc.lock stage entry."""
    listed = [{"path": p, "hash": "md5", "md5": h} for p, h in deps.items()]
    return {
        "cmd": cmd,
        "deps": listed,
        "params": {"params.yaml": params},
        "outs": [{"path": p, "md5": h} for p, h in outs.items()],
    }


LOCK = {
    "download": entry({"stages/download.py": "d1"}, {"data.url": "a.gz"}, {path("raw"): "raw1"}),
    "clean": entry(
        {path("raw"): "raw1", "lorapipe/data/cleaning.py": "c1"}, {"clean": CLEAN}, {path("clean"): "clean1"}
    ),
    "sample": entry({path("clean"): "clean1", "stages/sample.py": "s1"}, {"sample.size": 100}, {path("sample"): "s1"}),
    "split": entry({path("sample"): "s1"}, {"split.seed": 42}, {path("split"): "sp1.dir"}),
    "tokenize": entry({path("split"): "sp1.dir"}, {"tokenize.seq_len": 512}, {path("tokenized"): "t1.dir"}),
    "train": entry({path("tokenized"): "t1.dir"}, {"lora": {"r": 16}}, {path("trained"): "m1.dir"}),
}


def changed(lock: dict, stage: str, **fields) -> dict:
    """A copy of `lock` with `stage`'s deps, params, outs or cmd changed."""
    lock = copy.deepcopy(lock)
    for field, value in fields.items():
        if field == "params":
            lock[stage]["params"]["params.yaml"].update(value)
        elif field == "cmd":
            lock[stage]["cmd"] = value
        else:
            for item in lock[stage][field]:
                item["md5"] = value.get(item["path"], item["md5"])
    return lock


def side(label: str, lock: dict | None, **fields) -> Side:
    return Side(label, lock, fields.pop("stats", {}), fields.pop("test_ids", None), fields.pop("near", None), **fields)


def test_the_same_data_is_one_line_whatever_else_changed():
    """lora.r changed: a new adapter, the same data."""
    new = changed(changed(LOCK, "train", params={"lora": {"r": 8}}, outs={path("trained"): "m2.dir"}), "train")
    blocks = data_blocks(side("main", LOCK), side("this revision", new), full=False)
    assert blocks == ["Data unchanged: same hashes for raw, clean, sample, split, tokenized."]
    assert markdown(blocks, escape_cell) == blocks[0] + "\n"  # no heading for one line
    untokenized = {k: v for k, v in LOCK.items() if k != "tokenize"}
    blocks = data_blocks(side("main", untokenized), side("pr", untokenized), full=False)
    assert blocks == ["Data unchanged: same hashes for raw, clean, sample, split (tokenized: in neither dvc.lock)."]
    assert data_blocks(side("main", None), side("pr", LOCK), full=False)[0].startswith("Data: no comparison, main")


def test_each_change_traces_to_what_differs_in_dvc_lock():
    stricter = changed(LOCK, "clean", params={"clean": {**CLEAN, "min_content_chars": 150}})
    assert traced_to("clean", LOCK, stricter) == ["params: clean.min_content_chars 20 -> 150"]
    recoded = changed(LOCK, "clean", deps={"lorapipe/data/cleaning.py": "c2"})
    assert traced_to("clean", LOCK, recoded) == ["code: lorapipe/data/cleaning.py"]
    new_raw = changed(changed(LOCK, "download", params={"data.url": "b.gz"}, outs={path("raw"): "raw2"}), "clean")
    new_raw = changed(new_raw, "clean", deps={path("raw"): "raw2"})
    assert traced_to("download", LOCK, new_raw) == ["params: data.url a.gz -> b.gz"]
    assert traced_to("clean", LOCK, new_raw) == [f"new raw data: {path('raw')}"]
    upstream = changed(LOCK, "sample", deps={path("clean"): "clean2"})
    assert traced_to("sample", LOCK, upstream) == [f"input: {path('clean')} (clean)"]
    added = copy.deepcopy(LOCK)
    added["clean"]["deps"].append({"path": "lorapipe/data/clean_rules.py", "md5": "r1"})
    assert traced_to("clean", LOCK, changed(added, "clean", cmd="python stages/clean.py more")) == [
        "dep added: lorapipe/data/clean_rules.py",
        "command (dvc.yaml)",
    ]
    same = traced_to("split", LOCK, changed(LOCK, "split", outs={path("split"): "sp2.dir"}))
    assert same == ["same params, code and inputs (a step that is not deterministic, or other library versions)"]
    assert traced_to("split", {}, LOCK) == ["the stage is in one dvc.lock only (new)"]


def test_counts_show_the_headlines_and_what_changed_with_signed_changes():
    old = {"records_read": 1000, "kept": 800, "dropped": {"empty_content": 190, "title_too_long": 10}}
    new = {"records_read": 1000, "kept": 700, "dropped": {"empty_content": 190, "content_too_short": 110}}
    rows = [cells for count in COUNTS["clean"] if (cells := count_cells(count, old, new))]
    assert rows == [
        ["lines read", "1,000", "1,000", "0"],
        ["kept", "800", "700", "-100"],
        ["dropped: title_too_long", "10", "0", "-10"],  # a reason gone from clean.json counts 0
        ["dropped: content_too_short", "0", "110", "+110"],
    ]
    full = [cells[0] for count in COUNTS["clean"] if (cells := count_cells(count, old, new, full=True))]
    assert "dropped: empty_content" in full and len(full) == len(COUNTS["clean"])
    tokenize = (
        {"train": {"examples": 100, "prompt_truncated": 10}},
        {"train": {"examples": 120, "prompt_truncated": 30}},
    )
    prompts = next(c for c in COUNTS["tokenize"] if c.label == "prompts cut (train)")
    assert count_cells(prompts, *tokenize) == ["prompts cut (train)", "10.0%", "25.0%", "+15.0 pts"]
    assert count_cells(prompts, None, tokenize[1]) == ["prompts cut (train)", "—", "25.0%", "—"]  # no tokenize.json


def near(rule: str, kept: bool, chars: int, name: str, title: str = "A title") -> NearLimit:
    return NearLimit(rule, kept, ord(name[0]), name, len(title), chars, title, "x" * chars)


SHORT = Reason.CONTENT_TOO_SHORT
# Records nearest clean.min_content_chars 20 on the base side, and nearest 150 on the tightened side.
OLD_NEAR = [near(SHORT, False, 19, "b"), near(SHORT, True, 25, "a"), near(SHORT, True, 160, "e")]
NEW_NEAR = [near(SHORT, False, 149, "c", HOSTILE), near(SHORT, True, 150, "d"), near(SHORT, False, 149, "e")]
STRICTER = changed(LOCK, "clean", params={"clean": {**CLEAN, "min_content_chars": 150}}, outs={path("clean"): "clean2"})


def test_a_tightened_rule_shows_the_records_it_drops_with_the_rule_that_decided():
    old, new = side("main", LOCK, near=OLD_NEAR), side("this revision", STRICTER, near=NEW_NEAR)
    dropped, kept = flips(old, new)
    # a: the base kept it (its file), 25 < 150 drops it here (replayed); c: dropped here (its file), the base's
    # limit 20 keeps it (replayed); e: both files hold it (160 chars there, 149 here: other code), they decide.
    assert [(f.record.id, f.old, f.new) for f in dropped] == [
        ("a", None, SHORT),
        ("c", None, SHORT),
        ("e", None, SHORT),
    ]
    assert kept == []  # b: dropped by both limits; d: kept by both
    assert [[f.record.id for f in found] for found in flips(new, old)] == [[], ["a", "c", "e"]]  # loosened: kept

    section = markdown(data_blocks(old, new, full=False), escape_cell)
    assert section.startswith("### Data\n")
    table = section.split("#### Dropped by this revision")[1].split("\n\n")[1]
    assert "| content\\_too\\_short: content 25 chars, clean.min\\_content\\_chars 150 (other side 20) |" in table
    assert len(table.splitlines()) == 2 + 3
    # Titles are user data: escaped like the rest of the report, in the comment and on the results page.
    for pattern in (r"@\w", r"#\d", r"\w://", r"www\.", r"(?<!\\)\$", "<b>", r"(?i)\bgh-\d", BIDI_CONTROL):
        assert not re.search(pattern, section), pattern
    page = html(data_blocks(old, new, full=False), cell, text)
    assert "&lt;b&gt;" in page and "<b>" not in page and not re.search(BIDI_CONTROL, page)
    assert "Kept by this revision&#x27;s cleaning, dropped by main&#x27;s: none" in page


def test_examples_are_spread_over_what_changed_and_all_of_them_go_to_the_summary():
    many = [near(SHORT, False, chars, f"r{chars}") for chars in range(100, 150, 5)]  # 10 records, 100..145 chars
    old, new = side("main", LOCK, near=[]), side("this revision", STRICTER, near=many)
    comment = [b for b in data_blocks(old, new, full=False) if isinstance(b, Table) and b.head[0] == "raw line"]
    lengths = [re.search(r"content (\d+) chars", row[1]).group(1) for row in comment[0].rows]
    assert lengths == ["100", "110", "120", "135", "145"]  # the range of it, ends included
    summary = [b for b in data_blocks(old, new, full=True) if isinstance(b, Table) and b.head[0] == "raw line"]
    assert len(summary[0].rows) == 10
    headings = [b.text for b in data_blocks(old, new, full=False) if hasattr(b, "text")]
    assert headings[0].endswith(
        ": 5 of the 10 found among the records nearest each length limit; the job summary lists them all"
    )


IDS = frozenset(f"{i:012x}" for i in range(100))


def scores(ids) -> list[dict]:
    return [{"id": i} for i in sorted(ids)]


@pytest.mark.parametrize(
    ("new_ids", "old_scored", "new_scored", "said"),
    [
        (IDS, IDS, IDS, "the same on both sides (100 records). So the scores below are paired: each of the 100"),
        (
            IDS - {f"{i:012x}" for i in range(40)} | {"f" * 12},
            sorted(IDS)[50:],
            sorted(IDS)[60:],
            "60 records in both, 40 only in main, 1 only in this revision. The 40 test samples scored on one side "
            "were all scored on the other too, so the scores below are still paired",
        ),
        (
            IDS - {f"{i:012x}" for i in range(40)} | {"f" * 12},
            sorted(IDS)[:50],
            [*sorted(IDS)[45:50], "f" * 12],
            "Only 5 of the 6 test samples this revision scored were scored by main too, so the scores below are "
            "unpaired",
        ),
        (None, IDS, IDS, "changed; this revision has no metrics/split_test_ids.txt"),
        (
            IDS - {f"{i:012x}" for i in range(40)},
            sorted(IDS)[:50],
            sorted(IDS)[50:60],
            "None of the 10 test samples this revision scored was scored by main too, so the scores below are unpaired",
        ),
    ],
    ids=["same-split", "changed-but-paired", "changed-unpaired", "no-ids", "none-scored-by-both"],
)
def test_the_test_split_overlap_says_what_it_means_for_the_scores(new_ids, old_scored, new_scored, said):
    old = side("main", LOCK, test_ids=IDS, scores=scores(old_scored), stats={"split": {"test": 100}})
    new = side("this revision", LOCK, test_ids=new_ids, scores=scores(new_scored), stats={"split": {"test": 100}})
    assert said in overlap(old, new, same_split=new_ids == IDS, compared="the scores below")


def test_a_malformed_data_file_is_one_error_line(tmp_path, monkeypatch):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    row = near(SHORT, True, 30, "a").to_json()
    (tmp_path / PATHS["clean_near_limits"]).write_text(json.dumps(row) + "\n" + json.dumps({**row, "kept": "yes"}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        UserError, match=r"^metrics/clean_near_limits.jsonl line 2: missing or of the wrong type: kept$"
    ):
        read_side(None, "this revision")
    (tmp_path / PATHS["clean_near_limits"]).unlink()
    (tmp_path / PATHS["split_json"]).write_text("{")
    with pytest.raises(UserError, match=r"^metrics/split.json: not valid JSON"):
        read_side(None, "this revision")


def report_of(repo: Path, base: str, out: Path) -> tuple[str, str]:
    """The report and the job summary of the workspace against `base`."""
    files = ("-o", str(out / "report.md"), "--summary", str(out / "summary.md"))
    sh(repo, sys.executable, "-m", "lorapipe.reporting.report", "--base", base, *files)
    return (out / "report.md").read_text(), (out / "summary.md").read_text()


def data_part(report: str) -> str:
    """The Data section: from its heading to its last paragraph, the test split's."""
    section = report.split("### Data\n")[1]
    return "### Data\n" + section[: section.index("\n", section.index("\nTest split: ") + 1) + 1]


def counts(section: str) -> dict[tuple[str, str], list[str]]:
    """(stage, count) -> [base, this revision, change, traced to] of the section's counts table."""
    rows, stage = {}, ""
    for cells in table_rows(next(block for block in section.split("\n\n") if block.startswith("|"))):
        stage = cells[0] or stage
        rows[(stage, cells[1].replace("\\_", "_"))] = cells[2:]
    return rows


def at(repo: Path, rev: str, name: str) -> bytes:
    return subprocess.run(["git", "show", f"{rev}:{path(name)}"], cwd=repo, capture_output=True, check=True).stdout


@pytest.mark.slow
def test_report_of_a_stricter_cleaning_rule_shows_what_it_changed_in_the_data(stricter_cleaning, tmp_path):
    repo, base, limit = stricter_cleaning.repo, stricter_cleaning.base, stricter_cleaning.min_content_chars
    assert ran(stricter_cleaning.rerun) == ["clean", "sample", "split", "tokenize"]
    report, summary = report_of(repo, base, tmp_path)
    section = data_part(report)
    assert report.index("### Data") < report.index("No per-sample scores")  # above the scores
    assert section.splitlines()[2].startswith(f"Data changed against {base[:7]} (the hashes in dvc.lock): clean, ")

    # Each data stage's counts, base -> this revision, with the signed change; the drop reason that changed.
    old, new = (json.loads(at(repo, rev, "clean_json")) for rev in (base, "HEAD"))
    rows = counts(section)
    assert rows[("clean", "kept")][:3] == [f"{old['kept']:,}", f"{new['kept']:,}", f"{new['kept'] - old['kept']:+,}"]
    assert rows[("clean", "kept")][3] == ""  # said once, on the stage's first row
    assert rows[("clean", "lines read")][3] == "params: clean.min\\_content\\_chars 20 -&gt; 150"
    dropped = new["dropped"]["content_too_short"]
    assert dropped > 0 and rows[("clean", "dropped: content_too_short")][:3] == ["0", f"{dropped:,}", f"+{dropped:,}"]
    assert [key for key in rows if key[1].startswith("dropped:")] == [("clean", "dropped: content_too_short")]
    assert rows[("sample", "records in")][3] == "input: data/clean.parquet (clean)"
    assert rows[("split", "train")][3] == "input: data/sample.parquet (sample)"
    assert rows[("tokenize", "train examples")][3] == "input: data/split (split)"
    # The job summary has every count, unchanged ones too.
    assert ("clean", "dropped: empty_content") in counts(data_part(summary))

    # Records the stricter rule drops that the base kept: the rule replayed on the raw file agrees, line by line.
    examples = section.split("#### Dropped by this revision&#x27;s cleaning")[1].split("\n\n")[1]
    raw = gzip.decompress((repo / path("raw")).read_bytes()).split(b"\n")
    lines = [int(cells[0].replace(",", "")) for cells in table_rows(examples)]
    assert len(lines) == EXAMPLES
    for number, cells in zip(lines, table_rows(examples), strict=True):
        chars = int(re.search(r"content (\d+) chars", cells[1]).group(1))
        assert 20 <= chars < limit and cells[1].endswith(f"min\\_content\\_chars {limit} (other side 20)")
        assert isinstance(parse_line(raw[number - 1], params_of(CleanParams)), tuple)
        assert parse_line(raw[number - 1], params_of(CleanParams, min_content_chars=limit)) == Rejected(SHORT)
    assert f"Kept by this revision&#x27;s cleaning, dropped by {base[:7]}&#x27;s: none" in section

    # The test split's overlap, from the test ids the split stage wrote: those of the test records.
    old_ids, new_ids = (set(at(repo, rev, "split_test_ids").decode().split()) for rev in (base, "HEAD"))
    test = pq.read_table(repo / path("split") / "test.parquet")
    assert new_ids == set(map(record_id, test["title"].to_pylist(), test["content"].to_pylist()))
    shared = len(old_ids & new_ids)
    assert 0 < shared < len(new_ids) == json.loads(at(repo, "HEAD", "split_json"))["test"]
    assert (
        f"Test split: {shared:,} records in both, {len(old_ids) - shared:,} only in {base[:7]}, "
        f"{len(new_ids) - shared:,} only in this revision." in section
    )
    assert len(section) < 6000  # fits a pull-request comment with room to spare


@pytest.mark.slow
def test_the_data_section_renders_in_a_browser(stricter_cleaning, browser, tmp_path):
    """The section as GitHub would show it (markdown-it's CommonMark with tables): the README's screenshot."""
    from markdown_it import MarkdownIt
    from selenium.webdriver.common.by import By

    report, _ = report_of(stricter_cleaning.repo, stricter_cleaning.base, tmp_path)
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(data_part(report))
    style = "body{font:14px system-ui;max-width:1200px;margin:1rem} td,th{border:1px solid #d0d7de;padding:3px 6px}"
    page = tmp_path / "report-data.html"
    page.write_text(
        f"<!doctype html><meta charset=utf-8><style>{style} table{{border-collapse:collapse}}</style>{body}"
    )
    browser.set_window_size(1280, 1000)
    browser.get(page.as_uri())
    assert len(browser.find_elements(By.CSS_SELECTOR, "table")) == 2  # the counts and the examples
    shown = browser.find_element(By.TAG_NAME, "body").text
    assert "Dropped by this revision's cleaning" in shown and "min_content_chars 20 -> 150" in shown  # unescaped once
    # The window's height holds its own frame too: the page's height plus the frame shows all of it.
    height = "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
    browser.set_window_size(1280, browser.execute_script(height) + 16)
    assert save_screenshot(browser, tmp_path / "report-data.png").stat().st_size > 20_000
