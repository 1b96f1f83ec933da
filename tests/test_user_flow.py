"""The README's main flow on a machine set up like a user's: a fresh clone, no git identity, an empty HOME.

`make demo`, then the README's next steps as written (`dvc exp run -S lora.r=8`, `dvc exp show`, the local
PR report against the demo's baseline, the results page, the queued sweep): each succeeds and leaves
`dvc status` clean, and nothing is asked of the internet. The flow runs once (conftest's `readme_flow`, whose
repo the report, results page, app, publish and GGUF tests read); this test checks what it printed and left."""

from __future__ import annotations

import csv
import re

import pytest

from lorapipe.core.artifacts import EXPORT_JSON
from lorapipe.workspace.demo import NEXT_STEPS
from tests.workspace import DEFAULT_CHECKS, README_SKIPS, readme_commands

SCREEN_LINES = 40  # a terminal window's height, about: make demo's output above its timing table fits it


@pytest.mark.slow
def test_fresh_machine_runs_the_demo_then_the_readmes_experiments_and_reports(readme_flow):
    repo, printed, status = readme_flow.repo, readme_flow.printed, readme_flow.status
    assert "pip install" not in printed["make -n demo"]  # the venv is this interpreter's: never reinstall into it
    demo = printed["make demo"]
    assert "git identity: no user.name or user.email configured" in demo
    # Quiet: a line or two per stage (DVC's own and every library's left out, no progress bar), so what comes
    # before the timing table fits a screen; the scores follow, then the next steps.
    lines = demo.splitlines()
    table = next(i for i, line in enumerate(lines) if re.match(r"step +seconds +share", line))
    assert table <= SCREEN_LINES and "\r" not in demo and "%|" not in demo, demo
    assert "Running stage" not in demo and "dvc push" not in demo and "INFO" not in demo, demo
    assert "dvc (hash, cache, git)" in demo  # the per-stage timing table
    assert [line.split()[:2] for line in lines[-len(NEXT_STEPS) :]] == [c.split()[:2] for c, _ in NEXT_STEPS]
    assert printed["git branch --show-current"].strip() == "demo"
    assert printed["git status --porcelain --untracked-files=no"] == ""
    assert printed["git ls-files"].split() == ["dvc.lock", "metrics/eval_scores.jsonl"]
    # The README's second command after the first, on the demo's branch whose commit holds the offline profile:
    # the tests that compare with the real run's defaults still read them (tests/workspace.py real_run_commit).
    assert printed[DEFAULT_CHECKS].rstrip().endswith("exit 0"), printed[DEFAULT_CHECKS][-3000:]
    again = printed["make demo, again"]  # idempotent: nothing re-run or committed
    assert "train: done" not in again and "committed" not in again, again
    assert printed["git rev-list --count HEAD"].strip() == "3"  # the clone, the profile, the results
    # Offline as promised: no request left the machine (MLflow's usage data went out before 2026-12-06).
    assert readme_flow.outside == []

    # The README's next steps, verbatim and in order; after each, after the sweep ran, after `dvc exp apply`
    # and after the export (outside DVC): `dvc status` clean.
    steps = [c for c in readme_commands("Next steps") if c not in README_SKIPS]
    assert steps and list(status) == ["make demo", *steps, "the queued sweep", "dvc exp apply", "the export"]
    for after, said in status.items():
        assert "up to date" in said, f"dvc status after {after}:\n{said}"

    shown = list(csv.DictReader(printed["the queued sweep"].splitlines()))
    params = [column for column in shown[0] if "." in column and column.split(".")[0] in {"lora", "train", "data"}]
    assert params == ["lora.r"], list(shown[0])  # against the demo's commit, only what the experiments changed
    assert set(readme_flow.experiments) == {"8", "4", "32"}, shown  # the variant and the sweep's two values
    assert (repo / "results/index.html").is_file()
    text = (repo / "report.md").read_text()
    assert "no per-sample scores" not in text and "ROUGE-L" in text
    # A queued experiment (not in the workspace then) reported against the demo's baseline, by its name.
    queued = readme_flow.experiments["4"]
    assert (repo / "r4.md").read_text().splitlines()[0].startswith(f"## lorapipe report: experiment `{queued}` (")
    assert (repo / EXPORT_JSON).is_file()
