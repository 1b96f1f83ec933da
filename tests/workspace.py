"""Temp workspaces that run the real stage scripts the way `dvc repro` does (cwd = a repo root)."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.conftest import ROOT, child_env, default_params

T = TypeVar("T")


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
    shutil.copytree(model_dir, ws / "models/base")
    write_params(ws, **{"data": {"url": "data/trn.json.gz"}, **sections})
    stage(ws, "download.py", "data/raw.json.gz", "metrics/download.json")
    stage(ws, "clean.py", "data/raw.json.gz", "data/clean.parquet", "data/rejects.jsonl", "metrics/clean.json")
    stage(ws, "sample.py", "data/clean.parquet", "data/sample.parquet", "metrics/sample.json")
    stage(ws, "split.py", "data/sample.parquet", "data/split", "metrics/split.json")
    stage(ws, "tokenize_pack.py", "data/split", "models/base", "data/tokenized", "metrics/tokenize.json")
    return ws


# The generate_base stage's command line, as in dvc.yaml; evaluate reads its output.
BASE_OUTPUTS = "data/base_outputs.json"
BASE_ARGS = ("data/split/test.parquet", "models/base", BASE_OUTPUTS)


def train_args(metrics: str | Path = "metrics", adapter: str | Path = "models/adapter") -> tuple[str, ...]:
    """train's command line, as in dvc.yaml (another adapter and metrics folder for side runs)."""
    outputs = ("train.json", "train_log.csv", "val_log.csv", "loss_curve.png")
    return ("data/tokenized", "models/base", str(adapter), *(f"{metrics}/{name}" for name in outputs))


def eval_args(adapter: str = "models/adapter", metrics: str | Path = "metrics") -> tuple[str, ...]:
    """evaluate's command line, as in dvc.yaml (another adapter and metrics folder for side runs)."""
    outputs = ("eval.json", "eval_samples.jsonl", "eval_scores.jsonl", "eval_run.json")
    return ("data/split/test.parquet", "models/base", BASE_OUTPUTS, adapter, *(f"{metrics}/{name}" for name in outputs))


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
        [sys.executable, str(ROOT / "stages/train.py"), *train_args(metrics), "--checkpoints", str(checkpoints)],
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
    with open(metrics / "train_log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def params_of(cls: type[T], **overrides: Any) -> T:
    """`cls`'s section of the committed params.yaml (where every default lives), with `overrides`, validated."""
    from lorapipe.params import SECTION_OF, parse_section

    return parse_section(cls, {**default_params()[SECTION_OF[cls]], **overrides}, source="HEAD:params.yaml")
