"""make demo's git side (lorapipe.workspace.demo) on a plain git checkout: it writes to the branch `demo` only when it
made that branch, suggests nothing that deletes work, and commits only the files it wrote."""

from __future__ import annotations

import shutil

import pytest

from lorapipe.core.cli import UserError
from lorapipe.core.params import PARAM_FILES
from lorapipe.workspace import demo
from tests.workspace import ROOT, commit, committed_params_text, sh


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A project checkout on `main`, as cloned, the working directory of the test."""
    for name in PARAM_FILES:
        (tmp_path / name).write_text(committed_params_text(name))
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    sh(tmp_path, "git", "init", "-q")
    commit(tmp_path, "the project")
    sh(tmp_path, "git", "branch", "-M", "main")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def git(checkout, *args: str) -> str:
    return sh(checkout, "git", *args).stdout.strip()


def test_a_users_own_branch_named_demo_is_never_written_to(checkout):
    sh(checkout, "git", "checkout", "-q", "-b", "demo")
    (checkout / "mine.txt").write_text("my work\n")
    commit(checkout, "my work, on my branch demo")
    tip = git(checkout, "rev-parse", "demo")
    for where in ("demo", "main"):  # on it, and on a commit it contains
        sh(checkout, "git", "checkout", "-q", where)
        with pytest.raises(UserError, match="exists that make demo did not make") as refused:
            demo.start()
        assert "`git branch -m demo my-demo`, which keeps its commits" in str(refused.value)
        assert "-D" not in str(refused.value)
        assert git(checkout, "rev-parse", "demo") == tip and git(checkout, "status", "--porcelain") == ""
    sh(checkout, "git", "checkout", "-q", "demo")
    with pytest.raises(UserError, match="not on the branch 'demo' that make demo made"):
        demo.record()
    assert git(checkout, "rev-parse", "demo") == tip


def test_the_branch_it_made_is_taken_up_again_and_no_refusal_deletes_work(checkout):
    demo.start()
    assert git(checkout, "branch", "--show-current") == "demo"
    # The profile sets keys of both params files (ops.save_every is in settings.yaml): one commit holds both.
    assert git(checkout, "show", "--name-only", "--format=", "HEAD").split() == list(PARAM_FILES)
    assert git(checkout, "status", "--porcelain") == ""
    assert git(checkout, "config", "--get", demo.MARKER) == "true"
    sh(checkout, "git", "checkout", "-q", "main")
    demo.start()  # run again: back on its own branch
    assert git(checkout, "branch", "--show-current") == "demo"
    sh(checkout, "git", "checkout", "-q", "main")
    (checkout / "new.txt").write_text("main moved on\n")
    commit(checkout, "main moves on")
    with pytest.raises(UserError, match="made from another commit") as refused:
        demo.start()
    assert "`git branch -m demo demo-old`, which keeps its commits" in str(refused.value)
    assert "-D" not in str(refused.value)


def test_record_commits_only_the_runs_files_whatever_else_is_staged(checkout):
    demo.start()
    (checkout / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (checkout / "metrics").mkdir()
    (checkout / "metrics/eval.json").write_text("{}\n")
    (checkout / "notes.txt").write_text("staged by the user, or by DVC's autostage\n")
    sh(checkout, "git", "add", "notes.txt")
    demo.record()
    assert git(checkout, "show", "--name-only", "--format=", "HEAD").split() == ["dvc.lock", "metrics/eval.json"]
    assert git(checkout, "diff", "--cached", "--name-only") == "notes.txt"  # still staged, not committed
