"""The README's main flow on a machine set up like a user's: a fresh clone, no git identity, an empty HOME.

`make demo`, then the README's next steps as written (`dvc exp run -S lora.r=8`, `dvc exp show`, the local
PR report against the demo's baseline, the results page, the queued sweep): each succeeds and leaves
`dvc status` clean. The offline profile is
shortened (QUICK_RUN) in the clone, so the whole flow takes minutes."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import pytest
import yaml

from lorapipe.core.artifacts import EVAL_SCORES, EXPORT_COMMAND, EXPORT_JSON
from lorapipe.workspace.demo import NEXT_STEPS
from tests.workspace import (
    QUICK_RUN,
    ROOT,
    commit,
    copy_checkout,
    queue_status,
    readme_commands,
    sh,
    user_machine_env,
    wait_for,
)

SCREEN_LINES = 40  # a terminal window's height, about: make demo's output above its timing table fits it
README_SKIPS = {
    "source .venv/bin/activate": "the flow's PATH starts with the venv's bin/",
    "python app.py": "a server that runs until stopped: tests/test_app.py drives it in a browser",
}


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
    demo = sh(repo, "bash", "-c", "make demo 2>&1", env=env).stdout  # as a terminal shows it, in order
    assert "git identity: no user.name or user.email configured" in demo
    # Quiet: a line or two per stage (DVC's own and every library's left out, no progress bar), so what comes
    # before the timing table fits a screen; the scores follow, then the next steps.
    lines = demo.splitlines()
    table = next(i for i, line in enumerate(lines) if re.match(r"step +seconds +share", line))
    assert table <= SCREEN_LINES and "\r" not in demo and "%|" not in demo, demo
    assert "Running stage" not in demo and "dvc push" not in demo and "INFO" not in demo, demo
    assert "dvc (hash, cache, git)" in demo  # the per-stage timing table
    assert [line.split()[:2] for line in lines[-len(NEXT_STEPS) :]] == [c.split()[:2] for c, _ in NEXT_STEPS]
    assert sh(repo, "git", "branch", "--show-current", env=env).stdout.strip() == "demo"
    assert sh(repo, "git", "status", "--porcelain", "--untracked-files=no", env=env).stdout == ""
    assert sh(repo, "git", "ls-files", "dvc.lock", str(EVAL_SCORES), env=env).stdout.split() == [
        "dvc.lock",
        EVAL_SCORES.as_posix(),
    ]
    assert_dvc_status_clean(repo, env, "make demo")
    # The README's second command after the first: on the demo's branch, whose commit holds the offline
    # profile, the tests still read the real run's defaults (tests/workspace.py real_run_commit). The tests
    # that compare with those defaults, run from the clone's own tests/:
    on_demo = {**env, "PYTHONPATH": str(repo)}
    checks = ("tests/test_params.py", "tests/test_publish.py", "tests/test_training.py")
    tests = sh(
        repo,
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow and not heavy",
        *checks,
        env=on_demo,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    again = sh(repo, "bash", "-c", "make demo 2>&1", env=env).stdout  # idempotent: nothing re-run or committed
    assert "train: done" not in again and "committed" not in again, again
    commits = sh(repo, "git", "rev-list", "--count", "HEAD", env=env).stdout.strip()
    assert commits == "3"  # the clone, the profile, the results

    # The README's next steps, verbatim and in order (README_SKIPS: the two that need no run here).
    for command in readme_commands("Next steps"):
        if command not in README_SKIPS:
            sh(repo, "bash", "-c", command, env=env)
            assert_dvc_status_clean(repo, env, command)

    def swept() -> bool:
        status = queue_status(repo)
        assert "Failed" not in status.values(), sh(repo, "dvc", "queue", "status", check=False).stdout
        return len(status) == 2 and set(status.values()) == {"Success"}

    wait_for(swept, timeout=1200, every=3)
    shown = list(csv.DictReader(sh(repo, "dvc", "exp", "show", "--only-changed", "--csv", env=env).stdout.splitlines()))
    params = [column for column in shown[0] if "." in column and column.split(".")[0] in {"lora", "train", "data"}]
    assert params == ["lora.r"], list(shown[0])  # against the demo's commit, only what the experiments changed
    by_r = {row["lora.r"]: row["Experiment"] for row in shown if row["typ"].startswith("branch")}
    assert {"8", "4", "32"} <= set(by_r), shown  # the variant and the sweep's two values
    assert_dvc_status_clean(repo, env, "the queued sweep")
    assert (repo / "results/index.html").is_file()
    text = (repo / "report.md").read_text()
    assert "no per-sample scores" not in text and "ROUGE-L" in text

    # Taking the queued experiment into the workspace, then exporting it (outside DVC): still clean.
    # A queued experiment (not in the workspace) reported against the demo's baseline, by its name.
    queued = by_r["4"]
    sh(repo, "python", "-m", "lorapipe.reporting.report", "--run", queued, "--base", "demo", "-o", "r4.md", env=env)
    assert (repo / "r4.md").read_text().splitlines()[0].startswith(f"## lorapipe report: experiment `{queued}` (")
    sh(repo, "dvc", "exp", "apply", queued, env=env)
    assert_dvc_status_clean(repo, env, "dvc exp apply")
    sh(repo, "python", *EXPORT_COMMAND.split()[1:], env=env)
    assert (repo / EXPORT_JSON).is_file()
    assert_dvc_status_clean(repo, env, "the export")
