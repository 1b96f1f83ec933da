"""Reliability: failing services (MLflow, the checkpoint mirror, the S3 remote) never cost local results."""

from __future__ import annotations

import hashlib

import pytest

from lorapipe.core.artifacts import TRAIN_JSON
from tests.http_server import serve_status
from tests.workspace import S3_SECRET, free_port, sh, stage, stage_args, use_remote, write_params


@pytest.mark.parametrize("status", [401, 500])  # refused credentials (403 takes the same path), a failing server
def test_failing_mlflow_and_a_mirror_that_is_down_warn_once_each_and_training_finishes(
    prepared_copy, status, monkeypatch
):
    """MLflow refusing every request, and ops.checkpoint_mirror: remote with the remote's S3 endpoint refusing
    connections (the restore and every upload fail): one warning each, and training ends as without them. A
    mirror that works: test_mirror's round trip and the cloud job."""
    workspace = prepared_copy
    sh(workspace, "git", "init", "-q")
    sh(workspace, "dvc", "init", "-q")
    use_remote(workspace, f"http://127.0.0.1:{free_port()}")
    train = {"max_steps": 2, "micro_batch": 2, "grad_accum": 1, "eval_every": 100}
    write_params(workspace, train=train, ops={"save_every": 1, "checkpoint_mirror": "remote", "mlflow": True})
    with serve_status(status) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123456")
        result = stage(workspace, "train.py", *stage_args("train"))
    assert result.stderr.count("mlflow tracking is off") == 1
    assert result.stderr.count("warning: checkpoint mirror") == 1, result.stderr
    assert "train: done, 2 steps" in result.stderr and (workspace / TRAIN_JSON).is_file()
    assert (workspace / "models/trained/adapter_model.safetensors").is_file()
    assert "wrong-password-123456" not in result.stderr and S3_SECRET not in result.stderr


def test_unreachable_s3_remote_fails_clearly_and_keeps_local_data(tiny_repo_copy, monkeypatch):
    repo = tiny_repo_copy
    port = free_port()
    sh(repo, "dvc", "remote", "add", "-f", "down", "s3://dvc")
    sh(repo, "dvc", "remote", "modify", "down", "endpointurl", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "FAKE" * 4)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-key-for-tests-0000")
    # One try per request: botocore's own retries of a refused connection add some 12 idle seconds and no claim.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    before = hashlib.sha256((repo / "data/sample.parquet").read_bytes()).hexdigest()
    push = sh(repo, "dvc", "push", "-r", "down", "--with-deps", "split", check=False)
    pull = sh(repo, "dvc", "pull", "-r", "down", "--with-deps", "split", check=False)
    for result in (push, pull):
        assert result.returncode != 0
        assert "ERROR" in result.stderr + result.stdout
        assert "fake-secret-key-for-tests-0000" not in result.stderr + result.stdout
    assert hashlib.sha256((repo / "data/sample.parquet").read_bytes()).hexdigest() == before
    assert "up to date" in sh(repo, "dvc", "status", "split").stdout
