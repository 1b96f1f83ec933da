"""The README's main flow on a machine set up like a user's: a fresh clone, no git identity, an empty HOME.

`make demo`, then `dvc exp run -S lora.r=8`, the queued sweep, the results page and the local PR report
against the demo's baseline: each succeeds and leaves `dvc status` clean. The offline profile is
shortened (QUICK_RUN) in the clone, so the whole flow takes minutes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from lorapipe.artifacts import EVAL_SCORES, EXPORT_COMMAND, EXPORT_JSON
from tests.test_experiments import queue_status
from tests.workspace import QUICK_RUN, ROOT, commit, copy_checkout, sh, user_machine_env, wait_for


def clean_clone(to: Path) -> Path:
    """A fresh clone of this checkout on `main`, its offline profile shortened; this interpreter's venv as .venv
    (make demo's install is done) and llama.cpp's converter where make demo expects them."""
    repo = copy_checkout(to)
    profile = yaml.safe_load((repo / "profiles/offline.yaml").read_text())
    for section, values in QUICK_RUN.items():
        profile.setdefault(section, {}).update(values)
    (repo / "profiles/offline.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    sh(repo, "git", "init", "-q", "-b", "main")
    commit(repo, "the project, as cloned")  # the fixture's own identity: the flow below has none
    (repo / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (repo / ".cache/llama.cpp").symlink_to(ROOT / ".cache/llama.cpp", target_is_directory=True)
    return repo


def assert_dvc_status_clean(repo: Path, env: dict[str, str], after: str) -> None:
    status = sh(repo, "dvc", "status", env=env).stdout
    assert "up to date" in status, f"dvc status after {after}:\n{status}"


@pytest.mark.slow
def test_fresh_machine_runs_the_demo_then_the_readmes_experiments_and_reports(tmp_path):
    if not (ROOT / ".cache/llama.cpp").is_dir():
        pytest.fail("run `make gguf-converter` (make test does it)")
    repo = clean_clone(tmp_path / "lorapipe")
    env = user_machine_env(tmp_path / "home", PATH=f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin")

    planned = sh(repo, "make", "-n", "demo", env=env).stdout
    assert "pip install" not in planned, planned  # the venv is this interpreter's: never reinstall into it
    demo = sh(repo, "make", "demo", env=env)
    assert "git identity: no user.name or user.email configured" in demo.stdout
    assert "dvc (hash, cache, git)" in demo.stdout  # the per-stage timing table
    assert sh(repo, "git", "branch", "--show-current", env=env).stdout.strip() == "demo"
    assert sh(repo, "git", "status", "--porcelain", "--untracked-files=no", env=env).stdout == ""
    assert sh(repo, "git", "ls-files", "dvc.lock", str(EVAL_SCORES), env=env).stdout.split() == [
        "dvc.lock",
        EVAL_SCORES.as_posix(),
    ]
    assert_dvc_status_clean(repo, env, "make demo")
    again = sh(repo, "make", "demo", env=env)  # idempotent: nothing re-run, nothing committed twice
    assert "Running stage" not in again.stdout and "committed" not in again.stdout
    commits = sh(repo, "git", "rev-list", "--count", "HEAD", env=env).stdout.strip()
    assert commits == "3"  # the clone, the profile, the results

    sh(repo, "dvc", "exp", "run", "-n", "r8", "-S", "lora.r=8", env=env)
    assert_dvc_status_clean(repo, env, "dvc exp run -S lora.r=8")

    sh(repo, "dvc", "exp", "run", "--queue", "-n", "r4", "-S", "lora.r=4", env=env)
    sh(repo, "dvc", "queue", "start", "-j", "1", env=env)

    def swept() -> bool:
        status = queue_status(repo)
        assert "Failed" not in status.values(), sh(repo, "dvc", "queue", "logs", "r4", check=False).stdout
        return status.get("r4") == "Success"

    wait_for(swept, timeout=900, every=3)
    shown = sh(repo, "dvc", "exp", "show", "--only-changed", "--csv", env=env).stdout.splitlines()
    header = shown[0].split(",")
    params = [column for column in header if "." in column and column.split(".")[0] in {"lora", "train", "data"}]
    assert params == ["lora.r"], header  # against the demo's commit, only what the experiments changed
    assert {"r8", "r4"} <= {row.split(",")[0] for row in shown}
    assert_dvc_status_clean(repo, env, "the queued sweep")

    sh(repo, "python", "-m", "lorapipe.reporting.results_page", env=env)
    assert (repo / "results/index.html").is_file()
    report = sh(repo, "python", "-m", "lorapipe.reporting.report", "--base", "demo", "-o", "report.md", env=env)
    text = (repo / "report.md").read_text()
    assert "no per-sample scores" not in report.stderr + text and "ROUGE-L" in text
    assert_dvc_status_clean(repo, env, "the results page and the report")

    # Taking the queued experiment into the workspace, then exporting it (outside DVC): still clean.
    sh(repo, "dvc", "exp", "apply", "r4", env=env)
    assert_dvc_status_clean(repo, env, "dvc exp apply r4")
    sh(repo, "python", *EXPORT_COMMAND.split()[1:], env=env)
    assert (repo / EXPORT_JSON).is_file()
    assert_dvc_status_clean(repo, env, "the export")
