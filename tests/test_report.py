"""The PR report builder on a temp repo with two commits of metrics, and the workflows' hygiene."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from lorapipe.report import escape_cell, samples_table
from tests.conftest import ROOT, sh

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def commit_metrics(repo: Path, rouge_l: float, r: int, message: str) -> None:
    scores = {"bleu": 1.0, "rouge1": 0.3, "rouge2": 0.1, "rougeL": rouge_l, "perplexity": 9.0}
    result = {"base": {**scores, "rougeL": 0.2}, "tuned": scores, "samples": 4}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/eval.json").write_text(json.dumps(result))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["lora"]["r"] = r
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def test_report_shows_old_new_and_delta(repo):
    commit_metrics(repo, 0.30, 16, "first")
    commit_metrics(repo, 0.45, 8, "second")
    (repo / "metrics/eval_samples.jsonl").write_text(
        json.dumps({"title": "Mug", "reference": "A mug.", "base": "Hmm", "tuned": "A fine mug."}) + "\n"
    )
    sh(repo, sys.executable, "-m", "lorapipe.report", "--base", "HEAD~1", "-o", "report.md")
    report = (repo / "report.md").read_text()
    row = next(line for line in report.splitlines() if "tuned.rougeL" in line)
    assert [c.strip() for c in row.strip("|").split("|")][1:] == ["0.3", "0.45", "+0.15"]
    params_row = next(line for line in report.splitlines() if "lora.r" in line)
    assert "16" in params_row and "8" in params_row
    assert "| Mug | A mug. | Hmm | A fine mug. |" in report


def test_report_without_changes_says_so(repo):
    out = subprocess.run(
        [sys.executable, "-m", "lorapipe.report", "--base", "HEAD", "-o", "same.md"], cwd=repo, capture_output=True
    )
    assert out.returncode == 0
    assert "No changes." in (repo / "same.md").read_text()


def test_model_output_cannot_inject_markdown_or_html(tmp_path):
    evil = "<img src=x onerror=alert(1)> [click](http://evil.example) ![x](http://t.example/p.png) | col\n## Heading"
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"title": "t", "reference": "r", "base": evil, "tuned": "`code` *b*"}) + "\n")
    table = samples_table(path, 5)
    body = table.splitlines()[-1]
    assert "<img" not in body and "&lt;img" in body
    assert "](" not in body.replace("\\](", "").replace("\\(", "")  # no live link syntax left
    assert body.count(" | ") == 3  # the pipe in the text did not add a column
    assert "\n" not in escape_cell("a\nb") and escape_cell("`x`") == "\\`x\\`"


def test_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    result = subprocess.run([actionlint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_least_privilege_and_fork_safe():
    for path in WORKFLOWS:
        text = path.read_text()
        flow = yaml.safe_load(text)
        assert "permissions" in flow, f"{path.name}: no top-level permissions"
        assert "pull_request_target" not in text, path.name
        # Untrusted PR text must never be expanded inside a shell script.
        assert "github.event.pull_request.title" not in text and "github.event.pull_request.body" not in text
        assert "write-all" not in text
    report = yaml.safe_load((ROOT / ".github/workflows/report.yml").read_text())
    comment = report["jobs"]["report"]["steps"][-1]
    assert "head.repo.full_name == github.repository" in comment["if"]
