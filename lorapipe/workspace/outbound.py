"""The credential check of whatever leaves the machine: files about to be committed and pushed, a commit
message, a DVC experiment's files. The same check the stages apply to `data.url` and
`ops.checkpoint_mirror` (lorapipe.core.credentials), over every value, plus the values of the secrets in the
environment (tokens and keys that must only ever be read from there).

    python -m lorapipe.workspace.outbound params.yaml dvc.lock metrics/train.json --message "Results: ..."
    python -m lorapipe.workspace.outbound --rev refs/exps/ab/cdef.../my-exp      # an experiment's RESULTS
    python -m lorapipe.workspace.outbound --list                                 # RESULTS, one a line, for the scripts
    python -m lorapipe.workspace.outbound --commit-message FILE...               # check, then print the message

Silent when nothing holds a credential; otherwise one error line naming each file and key (or line) and
the kind of credential, never its value, and exit status 1. scripts/push_results.sh runs it before it
commits or pushes anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.credentials import credentials_in
from lorapipe.core.params import PARAM_FILES, parse_yaml

# What a run sends home (scripts/push_results.sh commits them, push_experiments.sh checks an experiment's,
# cloud/job.sh takes them back from the results branch): the lock, every params file, the metrics.
RESULTS = ("dvc.lock", *PARAM_FILES, "metrics")

# Secrets our tools read from the environment; their values must never appear in what is pushed. Short
# values are left out: a 4-character "secret" would match ordinary text.
SECRET_ENVS = (
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "HF_TOKEN",
    "DAGSHUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "LORAPIPE_DATA_TOKEN",
    "LORAPIPE_DATA_PASSWORD",
)
MIN_SECRET_CHARS = 8
STRUCTURED = {".yaml", ".yml", ".lock", ".json"}  # read as data: a problem is named by its key


def _secret_values() -> dict[str, str]:
    return {name: value for name in SECRET_ENVS if len(value := os.environ.get(name, "")) >= MIN_SECRET_CHARS}


def text_problems(text: str, secrets: dict[str, str]) -> list[str]:
    """What in `text` is a credential: URL parts (`user:password@`, `?token=`) and secret env values, by name."""
    return credentials_in(text) + [f"the value of ${name}" for name, value in secrets.items() if value in text]


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of each scalar in a parsed YAML/JSON document."""
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from _leaves(inner, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _leaves(inner, f"{key}[{i}]")
    else:
        yield key, value


def file_problems(name: str, data: bytes, secrets: dict[str, str], label: str = "") -> list[str]:
    """`label: key (what)` for each credential in the bytes of the file `name` (labelled `label`, default its
    name); a YAML or JSON file by key, others by line."""
    text = data.decode("utf-8", errors="replace")
    kind, name = Path(name).suffix, label or name
    if kind in STRUCTURED:
        try:
            document = json.loads(text) if kind == ".json" else parse_yaml(text, name)
        except (UserError, ValueError, RecursionError):
            document = None  # not parsable: checked line by line below
        if document is not None:
            found = []
            for key, value in _leaves(document):
                what = text_problems(str(value), secrets) if isinstance(value, str) else []
                if what:
                    found.append(f"{name}: {key} ({', '.join(what)})")
            # Comments and keys are no value of the document, but they are pushed too.
            if not found and text_problems(text, secrets):
                found.append(f"{name} ({', '.join(text_problems(text, secrets))}, outside any value)")
            return found
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if what := text_problems(line, secrets):
            found.append(f"{name}: line {number} ({', '.join(what)})")
    return found


def _files(paths: list[str], rev: str | None) -> Iterator[tuple[str, str, bytes]]:
    """(name, label, bytes) of every file at or under `paths`: in the working tree, or at git revision `rev`
    (labelled `<name> of <the ref's last part>`: an experiment's name)."""
    if rev:
        listed = subprocess.run(
            ["git", "ls-tree", "-r", "-z", "--name-only", rev, "--", *paths], capture_output=True, check=False
        )
        if listed.returncode != 0:
            raise UserError(f"{rev}: not a git revision ({listed.stderr.decode().strip()})")
        for name in filter(None, listed.stdout.decode().split("\0")):
            shown = subprocess.run(["git", "show", f"{rev}:{name}"], capture_output=True, check=True)
            yield name, f"{name} of {rev.rsplit('/', 1)[-1]}", shown.stdout
        return
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                yield str(f), str(f), f.read_bytes()


def check(paths: list[str], message: str = "", rev: str | None = None) -> None:
    """UserError naming every credential in the files at `paths` (or at `rev`) and in `message`."""
    secrets = _secret_values()
    problems = [p for name, label, data in _files(paths, rev) for p in file_problems(name, data, secrets, label)]
    if what := text_problems(message, secrets):
        problems.append(f"the commit message ({', '.join(what)})")
    if problems:
        raise UserError(
            f"credentials in what would be pushed: {'; '.join(problems[:5])}"
            + (f" and {len(problems) - 5} more" if len(problems) > 5 else "")
            + "; nothing was committed or pushed: remove them (credentials belong in environment variables or "
            ".dvc/config.local), then push again"
        )


def commit_message(dvc_yaml: Path = Path("dvc.yaml")) -> str:
    """What a results commit says: what ran (dvc.yaml's stages, in order) and what it carries, never where (no
    host name or path). Read from dvc.yaml here rather than by a `dvc stage list` per push."""
    stages = parse_yaml(dvc_yaml.read_text(), str(dvc_yaml)).get("stages") or {}
    return f"Results: {' '.join(stages)} ({' '.join(RESULTS)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help=f"files or folders to check (default: {' '.join(RESULTS)})")
    parser.add_argument("--message", default="", help="a commit message to check too")
    parser.add_argument("--rev", help="check the files at this git revision (an experiment's ref) instead")
    parser.add_argument("--list", action="store_true", help="print the files a run sends home, one a line; check none")
    parser.add_argument(
        "--commit-message", action="store_true", help="check the files and the results commit's message, print it"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(RESULTS))
        return
    message = commit_message() if args.commit_message else args.message
    check(args.paths or list(RESULTS), message, args.rev)
    if args.commit_message:
        print(message)


if __name__ == "__main__":
    run_cli(main)
