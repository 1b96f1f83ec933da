"""The git and DVC calls of the reports, the app and run tracking, in one place.

None of them changes what a stage computes (they name commits and read other revisions), so an
edit here re-runs nothing: tests/test_dvc_yaml.py counts this module as infrastructure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lorapipe.cli import UserError

# What `dvc exp run` puts in its stages' environment (dvc.env): the experiment and its baseline commit.
DVC_EXP_NAME, DVC_EXP_BASELINE_REV = "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"


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


def dvc_json(*args: str) -> dict:
    """`dvc <args> --json`, parsed."""
    # The dvc of this very environment, whether or not its bin/ is on PATH (make runs .venv/bin/python).
    out = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise UserError(f"dvc {' '.join(args)} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout or "{}")
