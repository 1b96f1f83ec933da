"""MLflow tracking that can never cost a training run: any failure warns once, then goes quiet.

The tracking URI comes from MLFLOW_TRACKING_URI (DagsHub: https://dagshub.com/<user>/<repo>.mlflow
with MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD); unset, runs go to a local SQLite store
in the repo (`mlflow.db`, git-ignored): `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
settings.yaml's `ops.mlflow: false` logs nothing (what HF's `report_to="none"` is to its Trainer).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lorapipe.core.cli import log
from lorapipe.core.credentials import redact, redact_handlers, url_credentials
from lorapipe.core.outputs import sha256_of
from lorapipe.core.params import SETTINGS_FILE, flatten
from lorapipe.core.vcs import source_tags

LOCAL_STORE = "sqlite:///mlflow.db"
MLFLOW_RUN_FILE = "mlflow_run.json"  # in a training's checkpoint folder: the MLflow run it continues on resume
ADAPTER_TAG = "lorapipe.adapter_sha256"  # how evaluate finds the training run of its adapter
EXPERIMENT = "lorapipe"


class Tracker:
    """One MLflow run; every call is a no-op after the first failure.

    `mlflow_run_id` continues that run: a resumed training's (status back to RUNNING, steps already
    logged are not logged twice) or, for evaluate, the training run found by `find_tag`.
    """

    def __init__(
        self,
        stage: str,
        mlflow_run_id: str | None = None,
        enabled: bool = True,
        find_tag: tuple[str, str] | None = None,
    ) -> None:
        self.mlflow_run_id: str | None = None
        self._client = None
        self._logged: dict[str, set[int]] = {}  # metric -> the steps the run has: no step is logged twice
        self._continued = False
        # A tracking server that is down must not stall training for minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # No usage data leaves the machine, as with DVC's analytics (.dvc/config) and Gradio's (app.py); MLflow's
        # would also wait on a network that drops connections. MLFLOW_DISABLE_TELEMETRY=false turns it back on.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        if enabled:  # disabled: every call is a no-op (the non-main processes of a multi-process run)
            self._try(self._start, stage, mlflow_run_id, find_tag)

    def _start(self, stage: str, mlflow_run_id: str | None, find_tag: tuple[str, str] | None) -> None:
        from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
        from mlflow.tracking import MlflowClient

        redact_handlers(logging.getLogger("mlflow"))  # MLflow's lines go to its own handler, not the root's
        uri = os.environ.get("MLFLOW_TRACKING_URI") or LOCAL_STORE
        if url_credentials(uri):  # MLflow's own "View run at <uri>" line would print them; ours is redacted
            os.environ[MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name] = "true"
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        if find_tag and not mlflow_run_id:
            found = client.search_runs(
                [experiment_id], f"tags.`{find_tag[0]}` = '{find_tag[1]}'", order_by=["attributes.start_time DESC"]
            )
            mlflow_run_id = found[0].info.run_id if found else None
        if mlflow_run_id and _exists(client, mlflow_run_id):
            if stage == "train":  # a resumed training continues its own run
                client.update_run(mlflow_run_id, status="RUNNING")
                self._continued = True
        else:
            tags = {key: redact(value) for key, value in {**source_tags(), "stage": stage}.items()}
            run_name = "-".join(filter(None, [tags["dvc.exp_name"] or stage, tags["git.commit"][:7]]))
            mlflow_run_id = client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
        self._client, self.mlflow_run_id = client, mlflow_run_id
        log.info(f"mlflow: run {mlflow_run_id} at {redact(client.tracking_uri)}")

    def _call(self, fn) -> None:
        """Run one logging call, unless an earlier failure turned tracking off."""
        if self._client is not None:
            self._try(fn)

    def _try(self, fn, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:  # tracking is best effort: training results must survive it
            # Redacted before it is cut: a cut could leave a URL's user:pass without the @ that marks it.
            text = redact(str(err))
            reason = text.splitlines()[0][:200] if text.strip() else type(err).__name__
            log.warning(f"warning: mlflow tracking is off for this stage ({reason}); results are still written")
            self._client = None

    def log_params(self, sections: dict[str, Any]) -> None:
        """Params sections ({"lora": LoraParams(...)}) as dotted keys (lora.r), each value as its string;
        only params, never the environment."""
        self._call(lambda: self._client.log_batch(self.mlflow_run_id, params=_to_params(flatten(sections))))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """The numbers of `metrics`, nested dicts as dotted keys ({"tuned": {"bleu": ...}} -> tuned.bleu)."""
        self._call(lambda: self._client.log_batch(self.mlflow_run_id, metrics=_to_metrics(flatten(metrics), step)))

    def log_history(self, rows: Iterable[dict[str, Any]], prefix: str = "") -> None:
        """Per-step rows ({"step": 3, "loss": ...}) as metric histories, in batches."""
        if self._client is None:  # off: importing MLflow alone costs a second of CPU
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{prefix}{k}", float(v), now, int(row["step"]))
            for row in rows
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float))
        ]
        self._call(lambda: self._log_new(metrics))

    def _log_new(self, metrics: list) -> None:
        for key in {m.key for m in metrics} - set(self._logged):  # a continued run has history already
            history = self._client.get_metric_history(self.mlflow_run_id, key) if self._continued else []
            self._logged[key] = {m.step for m in history}
        # Each step the run lacks, not only those after its last: a killed process's steps that reached its
        # checkpoint but not MLflow come back with the finished run's whole history.
        metrics = [m for m in metrics if m.step not in self._logged[m.key]]
        for m in metrics:
            self._logged[m.key].add(m.step)
        for i in range(0, len(metrics), 1000):  # the REST API takes at most 1000 per batch
            self._client.log_batch(self.mlflow_run_id, metrics=metrics[i : i + 1000])

    def set_tag(self, key: str, value: str) -> None:
        self._call(lambda: self._client.set_tag(self.mlflow_run_id, key, redact(value)))

    def close_if_running(self, mlflow_run_ids: Iterable[str]) -> None:
        """Mark runs that a killed process left RUNNING as KILLED."""
        for mlflow_run_id in mlflow_run_ids:
            self._call(
                lambda r=mlflow_run_id: (
                    _exists(self._client, r, status="RUNNING") and self._client.set_terminated(r, "KILLED")
                )
            )

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            if path.exists():
                self._call(lambda p=path: self._upload(p, folder))

    def _upload(self, path: Path, folder: str | None) -> None:
        upload = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
        upload(self.mlflow_run_id, str(path), folder)

    def finish(self, status: str = "FINISHED") -> None:
        self._call(lambda: self._client.set_terminated(self.mlflow_run_id, status))


def _exists(client: Any, mlflow_run_id: str, status: str | None = None) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        info = client.get_run(mlflow_run_id).info
    except MlflowException:
        return False
    return status is None or info.status == status


def tracking_wanted(mlflow_setting: bool, main: bool = True) -> bool:
    """Whether this process logs to MLflow: settings.yaml's ops.mlflow, on the main process alone; said in one
    line when the setting turns it off, so a run missing from MLflow is not a mystery."""
    if main and not mlflow_setting:
        log.info(f"mlflow: off ({SETTINGS_FILE}: ops.mlflow is false)")
    return main and mlflow_setting


def training_tracker(checkpoints: Path, enabled: bool = True) -> Tracker:
    """The MLflow run of the training whose checkpoints are in `checkpoints`, continued on resume.

    Runs of the workspace's other trainings that a SIGKILL left RUNNING are closed as KILLED.
    """
    record = checkpoints / MLFLOW_RUN_FILE
    previous = _read_mlflow_run_id(record)
    tracker = Tracker("train", previous, enabled=enabled)
    others = (
        _read_mlflow_run_id(f) for f in checkpoints.parent.glob(f"*/{MLFLOW_RUN_FILE}") if f.parent != checkpoints
    )
    tracker.close_if_running(r for r in others if r)
    if enabled and tracker.mlflow_run_id and tracker.mlflow_run_id != previous:
        record.write_text(json.dumps({"run_id": tracker.mlflow_run_id}))
    return tracker


def finish_training(
    tracker: Tracker, summary: dict[str, Any], val_history: list[dict], metric_files: list[Path], adapter_weights: Path
) -> None:
    """End a finished training's run with its results: the validation history, train_details.json's numbers, the
    metric files, the adapter's hash (how evaluate finds this run) and, with LORAPIPE_MLFLOW_LOG_ADAPTER=1,
    the adapter's folder."""
    tracker.log_history(val_history)
    # val_loss is already a per-step history; logging it again would add a duplicate point.
    tracker.log_metrics({k: v for k, v in summary.items() if k not in ("steps", "val_loss")}, step=summary["steps"])
    tracker.log_artifacts(metric_files, "metrics")
    if os.environ.get("LORAPIPE_MLFLOW_LOG_ADAPTER") == "1":
        tracker.log_artifacts([adapter_weights.parent], "adapter")
    tracker.set_tag(ADAPTER_TAG, sha256_of(adapter_weights))
    tracker.finish()


def _read_mlflow_run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _to_params(params: dict[str, Any]):
    from mlflow.entities import Param

    return [Param(k, redact(str(v))[:6000]) for k, v in params.items()]


def _to_metrics(metrics: dict[str, float], step: int | None):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, (int, float))]
