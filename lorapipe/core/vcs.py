"""The git and DVC calls of the reports, the app and run tracking, in one place.

None of them changes what a stage computes (they name commits and read other revisions), so an
edit here re-runs nothing: tests/test_dvc_yaml.py counts this module as infrastructure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapipe.core.cli import UserError
from lorapipe.core.outputs import json_object

# What `dvc exp run` puts in its stages' environment (dvc.env): the experiment and its baseline commit.
DVC_EXP_NAME, DVC_EXP_BASELINE_REV = "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"
# DVC's name for the working tree, as a revision of `dvc plots/params/metrics diff` and in `dvc exp show`.
WORKSPACE = "workspace"
# Where DVC keeps a finished experiment, queued or not: refs/exps/<baseline[:2]>/<baseline[2:]>/<name>
# (DVC 3's ExpRefInfo; its other namespaces under refs/exps/, celery/ exec/ apply/ temp/, are no experiments).
EXPERIMENT_REF = re.compile(r"refs/exps/([0-9a-f]{2})/([0-9a-f]{38,62})/([^/]+)")
# The stash of queued experiments that have not started: one reflog entry each.
QUEUE_STASH = "refs/exps/celery/stash"


def commit_of(rev: str) -> str | None:
    """The commit a DVC revision (`dvc exp show`'s `rev`) names; None for the workspace (the files on disk)."""
    return None if rev == WORKSPACE else rev


def git(*args: str) -> str:
    """git's output, stripped, or "" when it fails (no checkout, no commits, unknown revision)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def git_commit() -> str:
    """HEAD's sha, or "" outside a git checkout."""
    return git("rev-parse", "HEAD")


def source_tags() -> dict[str, str]:
    """MLflow tags naming the code and params a run used.

    Under `dvc exp run`, HEAD is the experiment's baseline and the experiment's own commit is made only
    after the pipeline ran, so no run can name it: the tags name HEAD, whether the workspace differs from
    it (`-S lora.r=8` leaves params.yaml uncommitted) and which files, and the experiment, whose name
    `dvc exp show` resolves to its commit afterwards.
    """
    commit = git_commit()
    modified = git("diff", "--name-only", "HEAD").splitlines() if commit else []
    tags = {"git.commit": commit, "mlflow.source.git.commit": commit, "git.dirty": str(bool(modified)).lower()}
    if modified:
        tags["git.modified"] = ",".join(modified)[:500]  # MLflow's tag values are bounded; the first files tell
    tags["dvc.exp_name"] = os.environ.get(DVC_EXP_NAME, "")
    if os.environ.get(DVC_EXP_BASELINE_REV):
        tags["dvc.exp_baseline_rev"] = os.environ[DVC_EXP_BASELINE_REV]
    return tags


def file_at(rev: str, path: str) -> bytes | None:
    """A tracked file's bytes at a git revision; None where that revision lacks it."""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, check=False)
    return shown.stdout if shown.returncode == 0 else None


def read_file(rev: str | None, path: Path) -> bytes | None:
    """A file of the workspace (rev None) or of a git revision; None where it is absent."""
    if rev is None:
        return path.read_bytes() if path.is_file() else None
    return file_at(rev, path.as_posix())


def named_at(path: Path, rev: str | None) -> str:
    """A file as an error line names it: its path, and the revision unless it is the workspace's."""
    return str(path) if rev is None else f"{path} at {rev}"


def read_json_object(rev: str | None, path: Path) -> dict[str, Any] | None:
    """A JSON object file of the workspace (rev None) or of a git revision (outputs.json_object); None where it
    is absent."""
    raw = read_file(rev, path)
    return None if raw is None else json_object(raw, named_at(path, rev))


@dataclass(frozen=True)
class Revision:
    """One side of a comparison, as resolve_revision found it."""

    name: str  # as the user gave it
    commit: str | None  # the full sha to read; None: the working tree
    experiment: str = ""  # the DVC experiment whose commit this is, where it is one


def resolve_revision(name: str) -> Revision:
    """The commit `name` stands for, as DVC resolves revisions: `workspace` (the working tree); a git
    revision (branch, tag, sha, `HEAD~1`); else a finished experiment's name, queued or not (where two
    baselines have one of that name, the one based on HEAD, as `dvc exp` picks). A queued experiment that has
    not run, an ambiguous name or an unknown one is one error line."""
    if name == WORKSPACE:
        return Revision(name, None)
    experiments = experiment_refs()
    commit = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}")
    if commit:
        if commit in git("reflog", "show", "--format=%H", QUEUE_STASH, "--").split():
            raise UserError(f"{name} is a queued experiment that has not run yet: {NO_RESULTS}")
        named = [exp for exp_commit, _, exp in experiments if exp_commit == commit]
        return Revision(name, commit, named[0] if len(named) == 1 else "")
    found = [(exp_commit, baseline) for exp_commit, baseline, exp in experiments if exp == name]
    if len(found) > 1:
        head = git_commit()
        found = [(exp_commit, baseline) for exp_commit, baseline in found if baseline == head] or found
    if len(found) == 1:
        return Revision(name, found[0][0], name)
    if found:
        shas = ", ".join(f"{exp_commit[:7]} (based on {baseline[:7]})" for exp_commit, baseline in found)
        raise UserError(f"experiment name {name!r} is ambiguous: {shas}; name one by its sha")
    state = queue_state(name)
    if state in QUEUE_STATES:
        raise UserError(f"experiment {name!r} {QUEUE_STATES[state].format(name=name)}")
    raise UserError(
        f"unknown revision {name!r}: not a git revision (branch, tag or commit), nor the name of a finished "
        "experiment (`dvc exp show`) or of a queued one (`dvc queue status`)"
    )


# What `dvc queue status` says of an experiment that has no results, and what to tell the user.
NO_RESULTS = "it has no results yet; run `dvc queue start`, and report it once `dvc queue status` says Success"
QUEUE_STATES = {
    "Queued": f"is queued and has not run yet: {NO_RESULTS}",
    "Running": "is running: it has no results yet; report it once `dvc queue status` says Success",
    "Failed": "failed in the queue, so it has no results: `dvc queue logs {name}` says why",
}


def experiment_refs() -> list[tuple[str, str, str]]:
    """Every finished experiment in this repository: (its commit, its baseline commit, its name)."""
    listed = git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/")
    found = []
    for line in listed.splitlines():
        commit, _, ref = line.partition(" ")
        if match := EXPERIMENT_REF.fullmatch(ref):
            found.append((commit, match[1] + match[2], match[3]))
    return found


def queue_state(name: str) -> str:
    """`dvc queue status`'s Status of the experiment `name` (Queued, Running, Failed, Success), or ""."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "dvc", "queue", "status"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    # A table: Task, Name, Created (a time or a date, with spaces), Status.
    rows = [line.split() for line in out.stdout.splitlines()] if out.returncode == 0 else []
    return next((row[-1] for row in rows if len(row) >= 4 and row[1] == name), "")


def dvc_json(*args: str) -> dict:
    """`dvc <args> --json`, parsed."""
    # The dvc of this very environment, whether or not its bin/ is on PATH (make runs .venv/bin/python).
    out = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise UserError(f"dvc {' '.join(args)} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout or "{}")
