"""DVC push/pull against a real S3-compatible server (moto) on 127.0.0.1, credentials kept local."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import sh
from tests.workspace import free_port

KEY_ID, SECRET = "AKIA" + "TESTONLY" * 2, "fake/secret+key0123456789abcdefABCDEF01"
OUTPUTS = ["data/raw/trn.json.gz", "data/clean.parquet", "data/sample.parquet", "data/split/train.parquet"]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("moto_server did not start")
            time.sleep(0.3)
    import boto3

    boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="us-east-1"
    ).create_bucket(Bucket="dvc")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_delete_pull_roundtrip(repo, s3_endpoint):
    sh(repo, "dvc", "repro", "split")
    env = {**os.environ, "DAGSHUB_TOKEN": "", "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    setup = subprocess.run(
        [sys.executable, "-m", "lorapipe.remote", "--endpoint", s3_endpoint, "--default"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stderr
    assert SECRET not in setup.stdout + setup.stderr
    assert SECRET not in (repo / ".dvc/config").read_text()
    assert SECRET in (repo / ".dvc/config.local").read_text()
    ignored = subprocess.run(["git", "check-ignore", ".dvc/config.local"], cwd=repo, capture_output=True)
    assert ignored.returncode == 0  # never committed

    before = {name: digest(repo / name) for name in OUTPUTS}
    pushed = sh(repo, "dvc", "push", "--with-deps", "split")
    assert SECRET not in pushed.stdout + pushed.stderr
    shutil.rmtree(repo / ".dvc/cache")
    for name in ("data/raw", "data/split"):
        shutil.rmtree(repo / name)
    for name in ("data/clean.parquet", "data/sample.parquet"):
        (repo / name).unlink()
    sh(repo, "dvc", "pull", "--with-deps", "split")
    assert {name: digest(repo / name) for name in OUTPUTS} == before
    assert "up to date" in sh(repo, "dvc", "status", "split").stdout


def test_wrong_credentials_fail_clearly_and_keep_local_results(repo, s3_endpoint):
    sh(repo, "dvc", "repro", "split")
    sh(repo, "dvc", "remote", "add", "-f", "wrong", "s3://no-such-bucket")
    sh(repo, "dvc", "remote", "modify", "wrong", "endpointurl", s3_endpoint)
    before = digest(repo / "data/sample.parquet")
    result = sh(repo, "dvc", "push", "-r", "wrong", "split", check=False)
    assert result.returncode != 0
    assert "ERROR" in result.stderr or "ERROR" in result.stdout
    assert digest(repo / "data/sample.parquet") == before
