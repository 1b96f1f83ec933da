"""`make demo`'s git side: the demo runs on a local branch whose commits hold its params and results.

    python -m lorapipe.workspace.demo start    # git identity, the local branch `demo`, the offline profile committed
    dvc repro -q                     # (make demo times it)
    python -m lorapipe.workspace.demo record   # dvc.lock and metrics/ committed to `demo`
    python -m lorapipe.workspace.demo next     # what to run next (NEXT_STEPS), the last lines make demo prints

So the demo's run is a commit: `dvc exp run -S lora.r=8` is an experiment based on it,
`dvc exp show --only-changed` shows only what the experiment changed, the results page and
`python -m lorapipe.reporting.report --base demo` compare against it, and a queued experiment's
temp copy restores the demo's outputs from DVC's cache (it gets the committed dvc.lock).
Run again, nothing is re-run or committed twice. Work in progress is never committed: with
uncommitted changes to tracked files, `start` stops and says how to put them aside. A branch `demo` that
make demo did not make (yours) is never written to: the demo marks the branch it makes
(`git config branch.demo.lorapipe-demo`, which git drops with the branch), and commits only the files it
wrote, whatever else is staged.
"""

from __future__ import annotations

import argparse
import subprocess

from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.params import PARAM_FILES
from lorapipe.core.vcs import git
from lorapipe.workspace import profiles
from lorapipe.workspace.git_identity import ensure_identity

BRANCH = "demo"
COMMIT_PREFIX = "demo: "  # of the subject of every commit make demo makes (what the tests skip for the defaults)
# Set on the branch make demo made; git removes it with the branch (`git branch -d/-m`), so a later
# branch of the same name, the user's own, does not carry it.
MARKER = f"branch.{BRANCH}.lorapipe-demo"
PROFILE = "offline"
# What the demo's run writes into tracked files: `record` commits them. An interrupted run leaves them
# changed, and `start` goes on from there.
RUN_OUTPUTS = ("dvc.lock", "metrics")
# The README's next steps, which make demo's last lines repeat: (command, what it shows).
NEXT_STEPS = (
    ("dvc exp run -S lora.r=8", "a variant: re-runs only train and evaluate"),
    ("dvc exp show --only-changed", "both runs: the params they differ in, the metrics"),
    ("python -m lorapipe.reporting.report --base demo -o report.md", "the pull-request report, locally"),
    ("python app.py", "base vs tuned in the browser, http://127.0.0.1:7860"),
    ("python -m lorapipe.reporting.results_page", "results/index.html: every experiment"),
)


def run_git(*args: str) -> None:
    """A git command that must succeed (checkout, commit); its own message when it does not."""
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise UserError(f"git {' '.join(args)} failed: {said[0]}")


def uncommitted() -> list[str]:
    """Tracked files that differ from HEAD, staged or not."""
    return git("diff", "--name-only", "HEAD").splitlines()


def is_run_output(path: str) -> bool:
    return any(path == name or path.startswith(f"{name}/") for name in RUN_OUTPUTS)


def switch_to_branch() -> None:
    """Onto BRANCH: made from HEAD the first time, kept after that."""
    current = git("branch", "--show-current")
    changed = uncommitted()
    here = current or git("rev-parse", "--short", "HEAD")
    exists = bool(git("rev-parse", "--verify", "--quiet", f"refs/heads/{BRANCH}"))
    if exists and git("config", "--get", MARKER) != "true":
        raise UserError(
            f"a local branch '{BRANCH}' exists that make demo did not make (or made before it marked its branch); "
            f"it is left as it is: rename it (`git branch -m {BRANCH} my-{BRANCH}`, which keeps its commits) and "
            f"make demo again, which then makes its own '{BRANCH}'"
        )
    if current == BRANCH:
        if other := [path for path in changed if not is_run_output(path)]:
            raise UserError(
                f"{', '.join(other[:3])}: uncommitted changes; make demo commits its run to the branch '{BRANCH}', "
                f"so commit them, stash them (git stash) or drop them (git checkout -- {' '.join(other[:3])}) first"
            )
        return
    if changed:
        raise UserError(
            f"{', '.join(changed[:3])}: uncommitted changes on {here}; make demo commits its run to a local branch "
            f"'{BRANCH}', so commit or stash them (git stash) first"
        )
    if exists:
        if subprocess.run(["git", "merge-base", "--is-ancestor", "HEAD", BRANCH], check=False).returncode != 0:
            raise UserError(
                f"the local branch '{BRANCH}' was made from another commit than {here}: `git checkout {BRANCH}` "
                f"to go on with it, or rename it (`git branch -m {BRANCH} {BRANCH}-old`, which keeps its commits) "
                f"and make demo again to start it from {here}"
            )
        run_git("checkout", "-q", BRANCH)
        print(f"make demo: back on the local branch '{BRANCH}' (`git checkout {here}` returns)")
    else:
        run_git("checkout", "-q", "-b", BRANCH)
        run_git("config", MARKER, "true")
        print(f"make demo: runs on a new local branch '{BRANCH}', made from {here} (`git checkout {here}` returns)")


def commit(message: str, *paths: str) -> None:
    """Commit `paths` as they are in the working tree, when they differ from HEAD; nothing else, whatever
    else is staged (DVC's autostage stages its .gitignore edits, a user may have staged work)."""
    run_git("add", "--", *paths)
    if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths], check=False).returncode != 0:
        run_git("commit", "-q", "-m", message, "--", *paths)
        print(f"make demo: committed {message!r} to '{BRANCH}' ({git('rev-parse', '--short', 'HEAD')})")


def start() -> None:
    """Identity, branch, profile: what `dvc repro` then runs is the commit on BRANCH."""
    notice = ensure_identity()
    if notice:
        print(notice)
    switch_to_branch()
    profiles.main([PROFILE])
    commit(f"{COMMIT_PREFIX}{' and '.join(PARAM_FILES)} with the {PROFILE} profile", *PARAM_FILES)


def record() -> None:
    """Commit the run's dvc.lock and metrics/ to BRANCH: the baseline experiments are compared with."""
    if git("branch", "--show-current") != BRANCH or git("config", "--get", MARKER) != "true":
        raise UserError(
            f"not on the branch '{BRANCH}' that make demo made: run `python -m lorapipe.workspace.demo start` first "
            "(make demo does)"
        )
    commit(f"{COMMIT_PREFIX}results of the {PROFILE} run (dvc.lock, metrics/)", *RUN_OUTPUTS)


def next_steps() -> None:
    """What to run next, in the venv make demo made."""
    width = max(len(command) for command, _ in NEXT_STEPS)
    print("Next, after `source .venv/bin/activate`:")
    for command, what in NEXT_STEPS:
        print(f"  {command:<{width}}  # {what}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["start", "record", "next"])
    {"start": start, "record": record, "next": next_steps}[parser.parse_args(argv).step]()


if __name__ == "__main__":
    run_cli(main)
