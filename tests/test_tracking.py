"""MLflow tracking against a real `mlflow server` on 127.0.0.1, and with the server down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lorapipe.core.artifacts import EVAL_SCORES, PATHS, TRAIN_JSON
from tests.workspace import (
    STUDY_RUN,
    TRACKED,
    child_env,
    commit,
    free_port,
    printed_and_written,
    sh,
    stage,
    stage_args,
    update_params,
)

SECRET = "s3cr3t-do-not-leak-0123456789"


def run_with(monkeypatch, ws: Path, uri: str, script: str, *args: str) -> subprocess.CompletedProcess:
    """The stage with MLflow's settings and a DVC experiment's name in its environment."""
    with monkeypatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        env.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
        env.setenv("DVC_EXP_NAME", "brave-lora")
        return stage(ws, script, *args)


def test_train_and_evaluate_log_one_run_to_a_real_server(prepared_copy, mlflow_server, monkeypatch):
    """With the credentials in the URI (user:pass@, which MLflow sends as basic auth) and in MLflow's variables:
    the URI is printed, linked and written without them."""
    from mlflow.tracking import MlflowClient

    workspace = prepared_copy  # its base outputs decoded (no MLflow): evaluate logs both models' scores
    update_params(workspace, TRACKED)
    host = mlflow_server.removeprefix("http://")
    uri = f"http://alice:{SECRET}@{host}"
    train = run_with(monkeypatch, workspace, uri, "train.py", *stage_args("train"))
    evaluate = run_with(monkeypatch, workspace, uri, "evaluate.py", *stage_args("evaluate"))
    assert f"at http://{host}\n" in train.stderr
    client = MlflowClient(mlflow_server)
    # The server is the module's: other tests' runs are there too, under other (or no) experiment names.
    experiment = client.get_experiment_by_name("lorapipe").experiment_id
    runs = client.search_runs([experiment], "tags.`dvc.exp_name` = 'brave-lora'")
    assert len(runs) == 1  # evaluate adds to the train stage's run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["dvc.exp_name"] == "brave-lora" and run.info.run_name.startswith("brave-lora")
    train_params, eval_params = STUDY_RUN["train"], STUDY_RUN["eval"]
    assert run.data.params["lora.r"] == "16" and run.data.params["train.max_steps"] == str(train_params["max_steps"])
    assert run.data.params["eval.max_new_tokens"] == str(eval_params["max_new_tokens"])
    steps = train_params["max_steps"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, steps + 1))
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == steps // train_params["eval_every"]
    for key in ("base.rougeL", "tuned.rougeL", "delta.bleu", "tokens_per_s", "tuned.runaway", "delta.distinct2"):
        assert key in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "metrics")}
    assert {f"metrics/{PATHS[name].name}" for name in ("loss_curve", "train_log", "eval_details")} <= artifacts
    assert f"metrics/{EVAL_SCORES.name}" in artifacts
    # The PR report links the run: the experiment and the run's page on the tracking server.
    linked = json.loads((workspace / "metrics/eval_run.json").read_text())
    assert linked == {
        "experiment": "brave-lora",
        "mlflow_run_id": run.info.run_id,
        "mlflow_run_url": f"{mlflow_server}/#/runs/{run.info.run_id}",
    }
    # Credentials stay in the environment: not in logs, params, tags or any file written.
    assert SECRET not in printed_and_written(workspace, train, evaluate) + str(run.data.params) + str(run.data.tags)


def test_a_query_token_in_the_tracking_uri_reaches_no_log_line(tmp_path):
    """A server that is down: urllib3's retry line and our warning quote the URI's query, without its scheme."""
    uri = f"http://127.0.0.1:{free_port()}/?token={SECRET}&sessionid={SECRET}"
    code = "from lorapipe.core.cli import run_cli\nfrom lorapipe.train.tracking import Tracker\n"
    code += "run_cli(lambda: Tracker('train').finish())"  # logging as every entry point sets it up
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(MLFLOW_TRACKING_URI=uri),
    )
    assert result.returncode == 0, result.stderr
    assert "Retrying" in result.stderr and result.stderr.count("mlflow tracking is off") == 1  # both lines shown
    assert SECRET not in result.stdout + result.stderr and "token=***" in result.stderr


def test_mlflow_tags_and_params_never_hold_a_credential(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from lorapipe.train.tracking import Tracker

    store = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("DVC_EXP_NAME", f"https://host/x?sig={SECRET}")
    tracker = Tracker("train")
    tracker.set_tag("source", f"https://alice:{SECRET}@host/data.zip")
    tracker.log_params({"data": {"url": f"https://host/data.zip?access_token={SECRET}"}})
    run = MlflowClient(store).get_run(tracker.mlflow_run_id).data
    assert run.params["data.url"] == "https://host/data.zip" and run.tags["source"] == "https://host/data.zip"
    assert SECRET not in str(run.tags) + str(run.params)


def test_an_experiment_s_run_names_its_baseline_and_the_uncommitted_params(tmp_path, monkeypatch):
    """`dvc exp run -S lora.r=8` trains on HEAD plus an uncommitted params.yaml: the tags say both."""
    from mlflow.tracking import MlflowClient

    from lorapipe.train.tracking import Tracker

    (tmp_path / "params.yaml").write_text("lora:\n  r: 16\n")
    sh(tmp_path, "git", "init", "-q")
    commit(tmp_path, "baseline")
    head = sh(tmp_path, "git", "rev-parse", "HEAD").stdout.strip()
    (tmp_path / "params.yaml").write_text("lora:\n  r: 8\n")
    store = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("DVC_EXP_NAME", "brave-lora")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", head)  # as `dvc exp run` sets it
    tags = MlflowClient(store).get_run(Tracker("train").mlflow_run_id).data.tags
    assert tags["git.commit"] == tags["dvc.exp_baseline_rev"] == head and tags["dvc.exp_name"] == "brave-lora"
    assert tags["git.dirty"] == "true" and tags["git.modified"] == "params.yaml"


def test_a_tracking_server_that_is_down_costs_one_warning_that_shows_no_credential(prepared_copy, monkeypatch):
    """A URI with user:pass@ (a server that is up: the log-one-run test) whose server is down: one warning, with
    the URI without them, and the stage finishes as without tracking; nothing written holds them."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)  # as a DagsHub login sets it
    workspace = prepared_copy
    update_params(workspace, TRACKED)
    result = stage(workspace, "train.py", *stage_args("train"))
    assert result.stderr.count("mlflow tracking is off") == 1 and "Traceback" not in result.stderr
    assert (workspace / TRAIN_JSON).is_file() and (workspace / "models/trained").is_dir()
    assert SECRET not in printed_and_written(workspace, result)


def test_a_run_a_killed_training_left_running_is_closed_when_another_training_starts(tmp_path, monkeypatch):
    """A SIGKILL leaves a training's MLflow run RUNNING (nothing of the process runs after it): the next training in
    the workspace closes it as KILLED, unless it is that run resumed, which continues it. The processes, the
    signals and the one step history across them: test_training's SIGTERM-then-SIGKILL test."""
    from mlflow.tracking import MlflowClient

    from lorapipe.train.tracking import training_tracker

    store = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    folders = {name: tmp_path / "checkpoints" / name for name in ("b", "a")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    killed = training_tracker(folders["b"]).mlflow_run_id  # never finished, as a SIGKILL leaves it
    a = training_tracker(folders["a"]).mlflow_run_id
    client = MlflowClient(store)
    assert client.get_run(killed).info.status == "KILLED"  # closed when the next training started
    assert training_tracker(folders["a"]).mlflow_run_id == a  # a resumed training continues its own run
    assert client.get_run(a).info.status == "RUNNING"


def test_a_tracker_that_is_off_loads_no_mlflow():
    """ops.mlflow false (the tests' runs, a user without a server): every call is a no-op, and MLflow, a second
    of CPU to import, stays unloaded in the stage's process."""
    code = (
        "import sys\nfrom lorapipe.train.tracking import Tracker\n"
        "tracker = Tracker('train', enabled=False)\n"
        "tracker.log_params({'lora': {'r': 8}})\ntracker.log_metrics({'loss': 1.0}, step=1)\n"
        "tracker.log_history([{'step': 1, 'loss': 1.0}])\ntracker.set_tag('a', 'b')\ntracker.finish()\n"
        "print(tracker.mlflow_run_id, sorted(m for m in sys.modules if m.startswith('mlflow')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True)
    assert loaded.stdout.split() == ["None", "[]"], loaded.stdout + loaded.stderr
