"""DVC push/pull against a real S3-compatible server (moto) on 127.0.0.1, credentials kept local; the DagsHub login."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from tests.http_server import serve_dagshub
from tests.workspace import ROOT, assert_one_line_error, child_env, sh
from tests.workspace import S3_KEY_ID as KEY_ID
from tests.workspace import S3_SECRET as SECRET

OUTPUTS = ["data/raw/trn.json.gz", "data/clean.parquet", "data/sample.parquet", "data/split/train.parquet"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_delete_pull_roundtrip(repo, s3_endpoint):
    sh(repo, "dvc", "repro", "split")
    env = child_env(DAGSHUB_TOKEN="", AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    setup = subprocess.run(
        [sys.executable, str(ROOT / "scripts/remote.py"), "--endpoint", s3_endpoint, "--default"],
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


def test_dagshub_login_checks_the_token_and_exports_mlflow_variables_without_printing_it(tmp_path):
    """What a shell (cloud/job.sh) runs: `eval "$(python -m lorapipe.workspace.dagshub_login)"` sets MLflow's
    variables for the repo on the client's host; its output names the token's variable, never the token; a
    refused token is one line. (The notebook's in-process login is tested in test_notebook, against real servers.)"""
    token = "dagshub-app-" + "t0ken" * 6
    with serve_dagshub("alice", token, {}) as dagshub:

        def run(command: str, secret: str) -> subprocess.CompletedProcess:
            env = child_env(
                DAGSHUB_CLIENT_HOST=dagshub.url, DAGSHUB_USER="me", DAGSHUB_REPO="lorapipe", HOME=str(tmp_path)
            )
            env.pop("DAGSHUB_USER_TOKEN", None)
            return subprocess.run(
                ["bash", "-c", command], env={**env, "DAGSHUB_TOKEN": secret}, capture_output=True, text=True
            )

        printed = run(f"{sys.executable} -m lorapipe.workspace.dagshub_login", token)
        shell = run(f'eval "$({sys.executable} -m lorapipe.workspace.dagshub_login)" && env', token)
        refused = run(f"{sys.executable} -m lorapipe.workspace.dagshub_login", "not-" + token)
    assert printed.returncode == 0 and token not in printed.stdout + printed.stderr
    variables = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    assert variables["MLFLOW_TRACKING_URI"] == f"{dagshub.url}/me/lorapipe.mlflow"
    assert variables["MLFLOW_TRACKING_USERNAME"] == "alice"  # the token's user, as DagsHub's MLflow wants
    assert variables["MLFLOW_TRACKING_PASSWORD"] == variables["DAGSHUB_USER_TOKEN"] == token
    assert_one_line_error(refused, "refused the DagsHub token")
