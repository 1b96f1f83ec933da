"""The Colab loop closes: results reach `origin` on a branch, data and run-cache the DVC remote.

A local bare git repo plays GitHub and moto on 127.0.0.1 plays the DagsHub S3 remote; the scripts
are the ones the notebook and the GPU workflow run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workspace import ROOT, S3_KEY_ID, S3_SECRET, child_env, pushed_to_origin, ran, sh

QUICK = {
    "sample": {"size": 200},
    "tokenize": {"seq_len": 256},
    "train": {"max_steps": 4, "micro_batch": 2, "grad_accum": 1, "eval_every": 2},
    "eval": {"max_samples": 4, "batch_size": 4, "max_new_tokens": 8},
}


def assert_same_files(got: Path, want: Path) -> None:
    files = sorted(p.relative_to(want) for p in want.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file())
    assert all((got / f).read_bytes() == (want / f).read_bytes() for f in files)


def use_remote(repo: Path, endpoint: str) -> None:
    env = child_env(AWS_ACCESS_KEY_ID=S3_KEY_ID, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    command = [sys.executable, str(ROOT / "scripts/remote.py"), "--endpoint", endpoint, "--default"]
    subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)


@pytest.mark.slow
def test_each_stage_reaches_origin_and_a_new_machine_runs_none_again(tmp_path, tiny_model_dir, s3_endpoint):
    origin = tmp_path / "origin.git"
    repo = pushed_to_origin(tmp_path / "colab", origin, tiny_model_dir, QUICK)
    use_remote(repo, s3_endpoint)

    run = sh(repo, "bash", "scripts/repro_and_push.sh", "results/colab")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert run.stdout.count("pushed results/colab to origin") == len(stages)  # after every stage
    tuned = json.loads((repo / "metrics/eval.json").read_text())["tuned"]["rougeL"]

    # Another machine: a fresh clone of the branch gets data and models from the remote.
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", "-b", "results/colab", str(origin), str(clone))
    assert (clone / "dvc.lock").is_file() and (clone / "metrics/eval.json").is_file()
    use_remote(clone, s3_endpoint)
    sh(clone, "dvc", "pull", "-q")
    assert (clone / "models/trained/adapter_model.safetensors").is_file()
    assert "up to date" in sh(clone, "dvc", "status", "dvc.yaml").stdout
    report = sh(clone, sys.executable, "-m", "lorapipe.reporting.report", "--base", "main", "-o", "report.md")
    assert report.returncode == 0
    assert f"{tuned:.4g}"[:5] in (clone / "report.md").read_text()

    # The model is released as version 0.1.0 of the artifacts (annotated `name@vX.Y.Z` tags, which is how
    # `dvc artifacts get` finds a version); a teammate fetches it by name into a folder that is no repository,
    # and the app loads it: the tuned text evaluate wrote for the first test sample.
    for name in ("trained", "base"):
        sh(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", f"{name}@v0.1.0", "-m", "release")
        sh(clone, "git", "push", "-q", "origin", f"{name}@v0.1.0")
    sh(origin, "git", "symbolic-ref", "HEAD", "refs/heads/main")  # GitHub's default branch (`init --bare` says master)
    teammate = tmp_path / "teammate"
    teammate.mkdir()
    config = tmp_path / "dagshub.config"  # the remote, as the teammate's docs spell it (origin's default is local)
    remote_section = f"['remote \"dagshub\"']\n    url = s3://dvc\n    endpointurl = {s3_endpoint}\n"
    config.write_text("[core]\n    remote = dagshub\n" + remote_section)
    remote = ["--config", str(config)]
    fetch_env = child_env(AWS_ACCESS_KEY_ID=S3_KEY_ID, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    for name in ("trained", "base"):
        sh(teammate, "dvc", "artifacts", "get", str(origin), name, "-o", f"models/{name}", *remote, env=fetch_env)
    assert_same_files(teammate / "models/trained", clone / "models/trained")
    from app import Describer
    from lorapipe.params import EvalParams, TokenizeParams, load_params

    params = clone / "params.yaml"
    describer = Describer(teammate / "models", load_params(TokenizeParams, params).prompt_tokens)
    sample = json.loads((clone / "metrics/eval_samples.jsonl").read_text().splitlines()[0])
    assert describer.describe(sample["title"], load_params(EvalParams, params))[1] == sample["tuned"]

    # The VM is lost: on a new one, the same script on the branch runs no finished stage again.
    again = sh(clone, "bash", "scripts/repro_and_push.sh", "results/colab")
    assert ran(again.stdout) == []
    assert json.loads((clone / "metrics/eval.json").read_text())["tuned"]["rougeL"] == tuned
