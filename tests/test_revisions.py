"""The names a report's `--base` and `--run` take (lorapipe.core.vcs.resolve_revision): git revisions, experiment
names and `workspace`, on a small git repo with hand-made experiment refs; then once on a real DVC queue, whose
experiment stays unresolvable until it ran. The report of real experiments by name: tests/test_report.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorapipe.core.cli import UserError
from lorapipe.core.vcs import QUEUE_STASH, Revision, resolve_revision
from tests.workspace import assert_one_line_error, commit, sh


def head(repo: Path, rev: str = "HEAD") -> str:
    return sh(repo, "git", "rev-parse", rev).stdout.strip()


def experiment(repo: Path, baseline: str, name: str) -> str:
    """A commit on `baseline` kept where DVC keeps a finished experiment: refs/exps/<baseline[:2]>/<rest>/<name>."""
    tree = f"{baseline}^{{tree}}"
    made = sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", tree, "-p", baseline, "-m", name)
    sha = made.stdout.strip()
    sh(repo, "git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", sha)
    return sha


@pytest.fixture
def history(tmp_path, monkeypatch) -> dict[str, str]:
    """A repo on `main` with two commits (`v1` tags the first), experiments `r8` and `dup` on the first, another
    `dup` on a commit off any branch, `both` on each commit; the tests run in it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q", "-b", "main")
    shas = {}
    for text in ("first", "second"):
        (repo / "params.yaml").write_text(f"run: {text}\n")
        commit(repo, text)
        shas[text] = head(repo)
    sh(repo, "git", "tag", "v1", shas["first"])
    shas["r8"] = experiment(repo, shas["first"], "r8")
    shas["dup"] = experiment(repo, shas["first"], "dup")
    shas["other dup"] = experiment(repo, shas["r8"], "dup")
    shas["both"] = experiment(repo, shas["first"], "both")
    shas["both on HEAD"] = experiment(repo, shas["second"], "both")
    sh(repo, "git", "update-ref", "refs/exps/exec/EXEC_HEAD", shas["second"])  # DVC's bookkeeping, no experiment
    monkeypatch.chdir(repo)
    return shas


def test_revisions_resolve_as_dvc_resolves_them(history):
    first, second = history["first"], history["second"]
    assert resolve_revision("workspace") == Revision("workspace", None)
    assert {name: resolve_revision(name).commit for name in ("main", "v1", "HEAD~1", first[:7], second)} == {
        "main": second,
        "v1": first,
        "HEAD~1": first,
        first[:7]: first,
        second: second,
    }
    # An experiment by name, or by its sha, is named as the experiment.
    assert resolve_revision("r8") == Revision("r8", history["r8"], "r8")
    assert resolve_revision(history["r8"][:9]).experiment == "r8"
    # One name under two baselines: the one on HEAD, as `dvc exp` picks; else every candidate, in one line.
    assert resolve_revision("both").commit == history["both on HEAD"]
    with pytest.raises(UserError) as ambiguous:
        resolve_revision("dup")
    message = str(ambiguous.value)
    assert "'dup' is ambiguous" in message and "\n" not in message
    assert f"{history['dup'][:7]} (based on {first[:7]})" in message and history["other dup"][:7] in message
    for unknown in ("nope", "EXEC_HEAD"):
        with pytest.raises(UserError, match=r"not a git revision .* nor the name of a finished experiment"):
            resolve_revision(unknown)


def test_report_of_an_unknown_revision_is_one_error_line(history, tmp_path):
    out = tmp_path / "report.md"
    command = [sys.executable, "-m", "lorapipe.reporting.report", "--base", "main", "-o", str(out)]
    result = subprocess.run([*command, "--run", "nope"], capture_output=True, text=True)
    assert_one_line_error(result, "unknown revision 'nope'", "not a git revision", "experiment", "dvc queue status")
    assert not out.exists()


@pytest.mark.heavy  # a real DVC queue and its worker: about 10 s
def test_a_queued_experiment_resolves_once_it_ran(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q")
    for key, value in (("user.name", "t"), ("user.email", "t@t")):  # DVC commits experiments: an identity
        sh(repo, "git", "config", key, value)
    sh(repo, "dvc", "init", "-q")
    (repo / "params.yaml").write_text("x: 1\n")
    stage = {"cmd": "cp params.yaml out.txt", "params": ["x"], "outs": [{"out.txt": {"cache": False}}]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"copy": stage}}))
    commit(repo, "a pipeline")
    sh(repo, "dvc", "exp", "run", "--queue", "-n", "later", "-S", "x=2")
    monkeypatch.chdir(repo)
    queued = head(repo, QUEUE_STASH)  # what `dvc exp show` lists for it until it runs
    for name, said in (("later", "'later' is queued and has not run yet"), (queued[:7], "is a queued experiment")):
        with pytest.raises(UserError, match=said):
            resolve_revision(name)

    sh(repo, "dvc", "exp", "run", "--run-all", "-j", "1")
    ran = resolve_revision("later")
    assert ran.experiment == "later" and ran.commit != queued
    assert sh(repo, "git", "show", f"{ran.commit}:out.txt").stdout == "x: 2\n"
    baseline = head(repo)
    refs = sh(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    assert f"refs/exps/{baseline[:2]}/{baseline[2:]}/later" in refs  # the layout lorapipe.core.vcs reads


def test_the_workspace_with_uncommitted_changes_is_not_named_as_its_head_commit(history):
    from lorapipe.reporting.report import describe

    assert describe(resolve_revision("workspace")).endswith(" second")  # HEAD's subject: the run is HEAD's
    Path("params.yaml").write_text("run: edited\n")
    assert (
        describe(resolve_revision("workspace"))
        == f"the workspace, with uncommitted changes, on `{history['second'][:7]}` second"
    )
