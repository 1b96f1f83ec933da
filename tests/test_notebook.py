"""The Colab notebook is valid and runs the commands docs/colab.md documents."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.http_server import serve_dagshub
from tests.workspace import ROOT, S3_KEY_ID, S3_SECRET, sh, user_machine_env

NOTEBOOK = ROOT / "notebooks/colab.ipynb"


def shell_commands(skip_templated: bool = True) -> list[str]:
    """The notebook's `!` commands; those holding a {PARAM} are skipped unless asked for."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    lines = [line.strip() for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return [line[1:] for line in lines if line.startswith("!") and not (skip_templated and "{" in line)]


def test_notebook_is_valid_nbformat_4():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["accelerator"] == "GPU"
    for cell in nb["cells"]:
        assert cell["cell_type"] in {"code", "markdown"} and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None  # committed clean


def test_notebook_commands_match_the_docs():
    readme = ROOT.joinpath("docs/colab.md").read_text()
    commands = shell_commands()
    assert {"python scripts/remote.py --default", "python -m lorapipe.profiles colab"} <= set(commands)
    templated = shell_commands(skip_templated=False)
    assert (
        "bash scripts/repro_and_push.sh {BRANCH}" in templated and "bash scripts/push_results.sh {BRANCH}" in templated
    )
    assert "pip install -q -r requirements.txt" in commands  # no pins: Colab keeps its own torch/numpy
    for command in commands:
        assert f"\n{command}\n" in readme, f"docs/colab.md lacks `{command}`"


def test_notebook_reads_credentials_from_colab_secrets_only():
    text = NOTEBOOK.read_text()
    assert "userdata.get" in text
    for name in ("DAGSHUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "GITHUB_TOKEN"):
        assert f'"{name}"] = "' not in text  # never a literal value


def test_notebook_gives_a_fresh_vm_a_git_identity_before_dvc_commits(repo, tmp_path):
    """Colab's VM has no git identity: the notebook's own command gives the repo one before its
    `dvc exp run`, which can then commit the experiment, queued here (libgit2's path, which needs one)."""
    commands = shell_commands()
    identity, experiment = "python -m lorapipe.git_identity", "dvc exp run -S lora.r=8"
    assert commands.index(identity) < commands.index(experiment)
    assert commands.index(identity) < commands.index("python scripts/remote.py --default")  # before any commit
    for key in ("user.name", "user.email"):  # copy_tree's own call set one under .ci/run
        sh(repo, "git", "config", "--local", "--unset-all", key, check=False)
    env = user_machine_env(tmp_path / "home")
    sh(repo, *identity.split(), env=env)
    sh(repo, "python", "-m", "lorapipe.profiles", "colab", env=env)  # the notebook's edit, committed later
    sh(repo, *experiment.split(), "--queue", "-n", "colab", env=env)
    assert "colab" in sh(repo, "dvc", "queue", "status", env=env).stdout
    sh(repo, "dvc", "queue", "remove", "--all", env=env)


def credentials_cell() -> str:
    """The code cell that reads the Colab secrets, as a Python program: its `!` lines run in a shell, as on Colab."""
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    source = next("".join(c["source"]) for c in cells if "userdata.get" in "".join(c["source"]))
    lines = source.splitlines()
    return "\n".join(f"subprocess.run({s[1:]!r}, shell=True, check=True)" if s.startswith("!") else s for s in lines)


def test_notebook_logs_in_with_the_dagshub_client(repo, mlflow_server, s3_endpoint, tmp_path):
    """The credentials cell as Colab runs it, on a fresh machine, with DagsHub played on 127.0.0.1 (the client's
    DAGSHUB_CLIENT_HOST): the dagshub client checks the token, a stage's MLflow run lands on the repo's MLflow
    as the token's user, and `dvc push` reaches the repo's S3 endpoint with the token kept out of tracked files."""
    from mlflow.tracking import MlflowClient

    token = "dagshub-app-" + "t0ken" * 6
    secrets = {"DAGSHUB_USER": "me", "DAGSHUB_REPO": "lorapipe", "DAGSHUB_TOKEN": token, "GITHUB_TOKEN": "unused"}
    colab = f"import subprocess, sys, types\nsecrets = {secrets!r}\n"
    colab += "sys.modules['google.colab'] = types.SimpleNamespace(userdata=types.SimpleNamespace(get=secrets.get))\n"
    after = "\nfrom lorapipe.tracking import Tracker\ntracker = Tracker('colab-login')\n"
    after += "tracker.log_metrics({'colab_login': 1.0})\ntracker.finish()\nprint('run', tracker.mlflow_run_id)\n"
    routes = {"/me/lorapipe.mlflow": mlflow_server, "/me/lorapipe.s3": s3_endpoint}
    with serve_dagshub("me", token, routes) as dagshub:
        env = user_machine_env(tmp_path / "home", DAGSHUB_CLIENT_HOST=dagshub.url)
        program = colab + credentials_cell() + after
        cell = subprocess.run([sys.executable, "-c", program], cwd=repo, env=env, capture_output=True, text=True)
        assert cell.returncode == 0, cell.stderr[-3000:]
        (repo / "probe.txt").write_text("pushed through the S3 endpoint\n")
        sh(repo, "dvc", "add", "-q", "probe.txt", env=env)
        pushed = sh(repo, "dvc", "push", "probe.txt", env=env)
    assert ("GET", "/api/v1/user") in dagshub.requests  # the client's token check
    run_id = cell.stdout.split("run ")[-1].strip()
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.data.metrics["colab_login"] == 1.0 and run.info.status == "FINISHED"
    assert any(path.startswith("/me/lorapipe.s3/dvc/") for method, path in dagshub.requests if method == "PUT")
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
    assert s3.list_objects_v2(Bucket="dvc").get("KeyCount", 0) >= 1
    assert f"{dagshub.url}/me/lorapipe.s3" in (repo / ".dvc/config").read_text()
    assert token not in (repo / ".dvc/config").read_text() and token in (repo / ".dvc/config.local").read_text()
    assert token not in cell.stdout + cell.stderr + pushed.stdout + pushed.stderr
