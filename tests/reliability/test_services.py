"""Reliability: failing services (MLflow, the S3 remote) never cost local results."""

from __future__ import annotations

import hashlib

import pytest

from tests.http_server import serve_status
from tests.workspace import free_port, sh, stage, stage_args


@pytest.mark.parametrize("status", [401, 500])  # refused credentials (403 takes the same path), a failing server
def test_mlflow_refusing_requests_warns_once_and_training_finishes(prepared_copy, status, monkeypatch):
    workspace = prepared_copy
    with serve_status(status) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123456")
        result = stage(workspace, "train.py", *stage_args("train"))
    assert result.stderr.count("mlflow tracking is off") == 1
    assert "wrong-password-123456" not in result.stderr
    assert (workspace / "metrics/train.json").is_file()
    assert (workspace / "models/trained/adapter_model.safetensors").is_file()


def test_unreachable_s3_remote_fails_clearly_and_keeps_local_data(tiny_repo_copy, monkeypatch):
    repo = tiny_repo_copy
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
