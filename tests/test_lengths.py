"""The lengths stage: token length percentiles, budget cuts and packed-row fill, checked against tokenize."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lorapipe.data.lengths import coverage_budget, histogram_rows, length_summary, packed_examples, token_lengths
from tests.workspace import ROOT, assert_one_line_error, built_once, data_workspace, kept_read_only, stage

TOKENIZE = {"prompt_tokens": 8, "response_tokens": 24, "seq_len": 128}
LENGTHS_ARGS = (
    "data/split/train.parquet",
    "models/base",
    "data/tokenized/train.parquet",
    "metrics/lengths.json",
    "metrics/lengths_prompt.csv",
    "metrics/lengths_description.csv",
)


@pytest.fixture(scope="session")
def lengths_workspace(tmp_path_factory, tiny_model_dir) -> Iterator[Path]:
    """The data stages and the lengths stage on the tiny Llama's tokenizer; built once, read-only."""

    def build(ws: Path) -> None:
        data_workspace(ws, tiny_model_dir, sample={"size": 300}, tokenize=TOKENIZE)
        stage(ws, "lengths.py", *LENGTHS_ARGS)

    with kept_read_only(built_once(tmp_path_factory, "lengths", build)[0]) as ws:
        yield ws


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return [{k: int(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_coverage_budget_keeps_that_share_whole():
    lengths = np.arange(1, 101)  # 1..100
    assert coverage_budget(lengths, 0.95) == 95 and coverage_budget(lengths, 0.99) == 99
    assert coverage_budget(np.array([5, 5, 5, 40]), 0.95) == 40  # 3 of 4 is short of 95%
    summary = length_summary(lengths, budget=90)
    assert summary["cut_share"] == 0.1 and summary["budget_for_95pct"] == 95 and summary["max"] == 100
    assert (summary["p50"], summary["p90"]) == (50, 90)


def test_histogram_covers_every_length_and_the_budget():
    lengths = np.array([0, 3, 3, 10, 250])
    rows = histogram_rows(lengths, budget=400, bins=50)
    assert sum(r["examples"] for r in rows) == 5
    assert rows[-1]["tokens"] + (rows[1]["tokens"] - rows[0]["tokens"]) > 400  # the budget is on the axis
    assert {r["budget"] for r in rows} == {400}


def test_packed_examples_split_rows_at_position_restarts():
    positions = np.array([0, 1, 2, 0, 1, 0, 1, 2, 3, 0])  # rows [0 1 2 0 1] [0 1 2 3] [0]
    assert packed_examples(positions).tolist() == [3, 2, 4, 1]


def test_token_lengths_match_the_tokenizer_one_by_one(smollm2_tokenizer):
    texts = ["Acme Travel Mug, 16 oz", "", "naïve café — 3×", "x " * 300]
    expected = [len(smollm2_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert token_lengths(smollm2_tokenizer, texts, batch=3).tolist() == expected


def test_stage_agrees_with_what_tokenize_cut_and_packed(lengths_workspace):
    metrics = json.loads((lengths_workspace / "metrics/lengths.json").read_text())
    tokenized = json.loads((lengths_workspace / "metrics/tokenize.json").read_text())["train"]
    assert metrics["examples"] == tokenized["examples"]
    title, description = metrics["prompt"]["title"], metrics["description"]
    # The shares the budgets cut are the examples tokenize truncated.
    assert round(title["cut_share"] * metrics["examples"]) == tokenized["prompt_truncated"] > 0
    assert round(description["cut_share"] * metrics["examples"]) == tokenized["response_truncated"] > 0
    assert (title["budget"], description["budget"]) == (8, 24)
    assert title["budget_for_95pct"] <= title["budget_for_99pct"] <= title["max"]
    assert metrics["prompt"]["p50"] == title["p50"] + metrics["prompt"]["template_tokens"]
    packing = metrics["packing"]
    assert packing["rows"] == tokenized["rows"] and packing["fill_mean"] == pytest.approx(
        tokenized["packing_efficiency"], abs=1e-4
    )
    assert packing["longest_example"] <= 128 and packing["examples_per_row"] > 1


def test_histograms_hold_every_example_with_the_budget_marked(lengths_workspace):
    metrics = json.loads((lengths_workspace / "metrics/lengths.json").read_text())
    prompt = read_csv(lengths_workspace / "metrics/lengths_prompt.csv")
    description = read_csv(lengths_workspace / "metrics/lengths_description.csv")
    for rows in (prompt, description):
        assert sum(r["examples"] for r in rows) == metrics["examples"]
    assert {r["budget"] for r in prompt} == {metrics["prompt"]["template_tokens"] + 8}
    assert {r["budget"] for r in description} == {24}


def test_dvc_plots_render_the_histograms_with_the_budget_rule(lengths_workspace, tmp_path):
    """`dvc plots show` with the repo's histogram template gives a spec that renders to SVG."""
    import vl_convert

    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    shutil.copy(lengths_workspace / "metrics/lengths_description.csv", repo / "metrics")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots")
    (repo / "dvc.yaml").write_text(
        "plots:\n  - metrics/lengths_description.csv:\n      template: histogram\n      x: tokens\n      y: examples\n"
    )
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    [entry] = json.loads(shown.stdout)["data"]["metrics/lengths_description.csv"]
    spec = entry["content"]
    rule = spec["layer"][1]
    assert rule["mark"]["type"] == "rule" and rule["encoding"]["x"]["field"] == "budget"
    assert "<svg" in vl_convert.vegalite_to_svg(spec)


def test_missing_packed_rows_is_one_line_error(lengths_workspace, tmp_path):
    args = list(LENGTHS_ARGS)
    args[2] = str(tmp_path / "nothing.parquet")
    args[3:] = [str(tmp_path / name) for name in ("l.json", "p.csv", "d.csv")]
    assert_one_line_error(
        stage(lengths_workspace, "lengths.py", *args, check=False), "nothing.parquet", "dvc repro tokenize"
    )
    assert not (tmp_path / "l.json").exists()


def test_results_page_shows_the_stage_s_lengths(lengths_workspace, monkeypatch):
    """The page reads lengths.json as the stage writes it (nested), not a dash in every cell."""
    from lorapipe.reporting.results_page import cell
    from lorapipe.reporting.study_sections import study_sections

    metrics = json.loads((lengths_workspace / "metrics/lengths.json").read_text())
    monkeypatch.chdir(lengths_workspace)  # the page reads the workspace's lengths.json, a plain output
    html = study_sections([], lambda spec: "<svg></svg>", cell)
    table = html.split("Token lengths")[1]
    title, description = metrics["prompt"]["title"], metrics["description"]
    for field, figures in (("prompt (title tokens)", title), ("description", description)):
        row = next(line for line in table.splitlines() if line.startswith(f"<tr><td>{field}</td>"))
        shown = [cell(figures[key]) for key in ("budget", "cut_share", "p50", "p99", "max")]
        assert all(c in row for c in shown) and "—" not in row, row
