"""Security: no credential in tracked files or outputs, no remote code, no pickled weights."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, child_env, sh
from tests.workspace import stage

CREDENTIAL = re.compile(
    r"(AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{30,}|ghp_[A-Za-z0-9]{30,}|"
    r"(secret_access_key|password|token)\s*[:=]\s*[\"']?[A-Za-z0-9/+]{16,})"
)
# Built at run time, so this file holds no credential-shaped string for the scans to find.
SECRETS = {
    "HF_TOKEN": "hf_" + "FAKEfake" * 4 + "01",
    "AWS_SECRET_ACCESS_KEY": "FAKEsecret" * 3 + "02",
    "MLFLOW_TRACKING_PASSWORD": "FAKEpassword" * 2 + "03",
    "DAGSHUB_TOKEN": "FAKEdagshub" * 2 + "04",
}


def test_no_credentials_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        path = ROOT / name
        if path.is_file() and path.suffix not in {".gz", ".png"}:
            text = path.read_text(errors="ignore")
            assert not CREDENTIAL.search(text), f"possible credential in {name}"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=ROOT)
    assert ignored.returncode == 0


def test_remote_code_and_pickles_are_never_allowed():
    code = "\n".join(p.read_text() for p in [*ROOT.glob("lorapipe/*.py"), *ROOT.glob("stages/*.py")])
    assert "trust_remote_code=True" not in code
    assert "trust_remote_code=False" in code
    loads = re.findall(r"torch\.load\([^)]*\)", code)
    assert loads and all("weights_only=True" in call for call in loads)


def test_fake_secrets_in_the_environment_never_reach_outputs_or_logs(repo, monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    runs = [sh(repo, "dvc", "repro", "-f", "split")]
    runs.append(sh(repo, sys.executable, "-m", "lorapipe.reporting.report", "--base", "HEAD", "-o", "report.md"))
    outputs = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts and p.stat().st_size < 50_000_000]
    texts = [r.stdout + r.stderr for r in runs] + [p.read_bytes().decode("utf-8", "ignore") for p in outputs]
    for secret in SECRETS.values():
        assert not any(secret in text for text in texts), secret


def test_training_with_secrets_keeps_them_out_of_mlflow_and_outputs(tmp_path, tiny_model_dir, monkeypatch):
    from tests.workspace import data_workspace

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the local SQLite store
    ws = data_workspace(
        tmp_path,
        tiny_model_dir,
        sample={"size": 100},
        tokenize={"seq_len": 256},
        train={"max_steps": 2, "micro_batch": 2, "grad_accum": 1, "grad_checkpointing": False},
    )
    result = stage(ws, "train.py", "data/tokenized", "models/base", "models/adapter", "metrics")
    blobs = [result.stderr] + [p.read_bytes().decode("latin-1") for p in ws.rglob("*") if p.is_file()]
    assert (ws / "mlflow.db").is_file()
    for secret in SECRETS.values():
        assert not any(secret in blob for blob in blobs), secret


# Runs the remote setup with an audit hook that records every child process it starts.
RECORD_CHILDREN = """
import json, runpy, sys
seen = []
def hook(event, args):
    if event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system"):
        seen.append(repr(args))
sys.addaudithook(hook)
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    open("children.json", "w").write(json.dumps(seen))
"""


def test_remote_setup_never_puts_the_secret_on_a_command_line(tmp_path):
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    # Left by an earlier setup whose .dvc/config was since checked out again: must not stop this one.
    (tmp_path / ".dvc/config.local").write_text("['remote \"dagshub\"']\n    access_key_id = stale\n")
    secret = SECRETS["DAGSHUB_TOKEN"]
    result = subprocess.run(
        [sys.executable, "-c", RECORD_CHILDREN, str(ROOT / "scripts/remote.py"), "--default"],
        cwd=tmp_path,
        env=child_env(DAGSHUB_USER="me", DAGSHUB_REPO="lorapipe", DAGSHUB_TOKEN=secret),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert secret not in (tmp_path / "children.json").read_text()  # the process table shows argv to all users
    assert secret not in (tmp_path / ".dvc/config").read_text()
    local = tmp_path / ".dvc/config.local"
    assert secret in local.read_text() and local.stat().st_mode & 0o077 == 0
    assert sh(tmp_path, "dvc", "remote", "default").stdout.strip() == "dagshub"
    assert "https://dagshub.com/me/lorapipe.s3" in (tmp_path / ".dvc/config").read_text()
