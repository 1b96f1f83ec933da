"""Temp workspaces that run the real stage scripts the way `dvc repro` does (cwd = a repo root)."""

from __future__ import annotations

import csv
import functools
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lorapipe.artifacts import BASE, PATHS, TRAIN_LOG
from tests.conftest import ROOT, child_env, default_params


def write_params(ws: Path, **sections: dict[str, Any]) -> None:
    """params.yaml = the real run's defaults + the offline profile + `sections` overrides."""
    params = default_params()
    for overrides in (yaml.safe_load((ROOT / "profiles/offline.yaml").read_text()), sections):
        for section, values in overrides.items():
            params[section].update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))


def stage(ws: Path, script: str, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), *args],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stderr[-3000:]}")
    return result


def data_workspace(ws: Path, model_dir: Path, **sections: dict[str, Any]) -> Path:
    """A workspace with data/split and data/tokenized built from the synthetic sample."""
    (ws / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "data/synthetic/trn.json.gz", ws / "data/trn.json.gz")
    shutil.copytree(model_dir, ws / BASE)
    write_params(ws, **{"data": {"url": "data/trn.json.gz"}, **sections})
    for name in ("download", "clean", "sample", "split", "tokenize"):
        stage(ws, script_of(name), *stage_args(name))
    return ws


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1, no traceback, exactly one `error:` line holding every fragment."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def free_port() -> int:
    """A loopback port nobody listens on (for servers to start, or for refused connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_training(ws: Path, metrics: Path, checkpoints: Path, **env: str) -> subprocess.Popen:
    """The train stage in the background (to be signalled), on the workspace's data and base model."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "stages/train.py"),
            *stage_args("train", metrics),
            "--checkpoints",
            str(checkpoints),
        ],
        cwd=ws,
        env=child_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(
    ready: str | Callable[[], object], timeout: float, proc: subprocess.Popen | None = None, every: float = 0.05
) -> None:
    """Return once `ready` holds: a predicate returns something true, or a URL answers 200. Fail if `proc`
    (the process that brings it about) ends first, showing what it printed, or if `timeout` seconds pass
    (then `proc` is killed: a test that failed leaves nothing running)."""
    check = ready if callable(ready) else lambda: answers(ready)
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            printed = [p.read() for p in (proc.stdout, proc.stderr) if p is not None]
            text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x for x in printed)[-3000:]
            raise AssertionError(f"{proc.args[:3]} ended ({proc.returncode}) before {ready} was ready:\n{text}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
                proc.wait()
            raise AssertionError(f"{ready} not ready after {timeout} s")
        time.sleep(every)


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused while the server starts, or an HTTP error
        return False


def train_losses(metrics: Path) -> list[float]:
    with open(metrics / TRAIN_LOG.name) as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@functools.cache
def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them (`${paths.NAME}` filled in): what `dvc repro` runs."""
    from dvc.dvcfile import load_file
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return load_file(repo, "dvc.yaml").resolver.resolve()["stages"]


def script_of(name: str) -> str:
    """The script of dvc.yaml's stage `name`, relative to stages/."""
    return dvc_stages()[name]["cmd"].split()[1].removeprefix("stages/")


def stage_args(name: str, metrics: str | Path = "metrics", **paths: str | Path) -> tuple[str, ...]:
    """The arguments `dvc repro` passes to dvc.yaml's stage `name`. For side runs: `metrics` moves its
    metrics/ files to another folder, `paths` replace named paths of dvc.yaml (adapter="side/adapter")."""
    swap = {PATHS[key].as_posix(): str(value) for key, value in paths.items()}
    args = dvc_stages()[name]["cmd"].split()[2:]
    return tuple(
        swap.get(arg, f"{metrics}/{Path(arg).name}" if Path(arg).parent == Path("metrics") else arg) for arg in args
    )
