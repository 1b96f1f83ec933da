"""Reliability: failing services (MLflow, the S3 remote) never cost local results."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http_server import serve_status
from tests.workspace import copy_workspace, data_workspace, free_port, kept_read_only, sh, stage, stage_args

TRAIN = {
    "max_steps": 2,
    "micro_batch": 2,
    "grad_accum": 1,
    "eval_every": 2,
    "grad_checkpointing": False,
}
TRAIN_ARGS = stage_args("train")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir) -> Iterator[Path]:
    """Data and base model built; each test trains in its own copy (`workspace`)."""
    ws = data_workspace(
        tmp_path_factory.mktemp("services"),
        tiny_model_dir,
        sample={"size": 100},
        tokenize={"seq_len": 256},
        train=TRAIN,
        ops={"save_every": 1},
    )
    with kept_read_only(ws):
        yield ws


@pytest.fixture
def workspace(prepared, tmp_path) -> Path:
    return copy_workspace(prepared, tmp_path / "ws")


@pytest.mark.parametrize("status", [401, 403, 500])
def test_mlflow_refusing_requests_warns_once_and_training_finishes(workspace, status, monkeypatch):
    with serve_status(status) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123456")
        result = stage(workspace, "train.py", *TRAIN_ARGS)
    assert result.stderr.count("mlflow tracking is off") == 1
    assert "wrong-password-123456" not in result.stderr
    assert (workspace / "metrics/train.json").is_file()
    assert (workspace / "models/trained/adapter_model.safetensors").is_file()


def test_unreachable_s3_remote_fails_clearly_and_keeps_local_data(repo, monkeypatch):
    sh(repo, "dvc", "repro", "split")
    port = free_port()
    sh(repo, "dvc", "remote", "add", "-f", "down", "s3://dvc")
    sh(repo, "dvc", "remote", "modify", "down", "endpointurl", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "FAKE" * 4)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-key-for-tests-0000")
    before = hashlib.sha256((repo / "data/sample.parquet").read_bytes()).hexdigest()
    push = sh(repo, "dvc", "push", "-r", "down", "--with-deps", "split", check=False)
    pull = sh(repo, "dvc", "pull", "-r", "down", "--with-deps", "split", check=False)
    for result in (push, pull):
        assert result.returncode != 0
        assert "ERROR" in result.stderr + result.stdout
        assert "fake-secret-key-for-tests-0000" not in result.stderr + result.stdout
    assert hashlib.sha256((repo / "data/sample.parquet").read_bytes()).hexdigest() == before
    assert "up to date" in sh(repo, "dvc", "status", "split").stdout
