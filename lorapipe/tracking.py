"""MLflow tracking that can never cost a training run: any failure warns once, then goes quiet.

The tracking URI comes from MLFLOW_TRACKING_URI (DagsHub: https://dagshub.com/<user>/<repo>.mlflow
with MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD); unset, runs go to a local SQLite store
in the repo (`mlflow.db`, git-ignored): `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lorapipe.stage import log

LOCAL_STORE = "sqlite:///mlflow.db"
EXPERIMENT = "lorapipe"


def git_commit() -> str:
    """HEAD's sha, or "" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def flat_params(sections: dict[str, Any]) -> dict[str, str]:
    """{"lora": LoraParams(r=8, ...)} -> {"lora.r": "8", ...}; only params, never the environment."""
    flat = {}
    for section, params in sections.items():
        for key, value in dataclasses.asdict(params).items():
            flat[f"{section}.{key}"] = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


class Tracker:
    """One MLflow run; every call is a no-op after the first failure."""

    def __init__(self, stage: str, run_id: str | None = None, enabled: bool = True) -> None:
        self.run_id: str | None = None
        self._client = None
        # A tracking server that is down must not stall training for minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        if enabled:  # disabled: every call is a no-op (the non-main processes of a multi-process run)
            self._try(self._start, stage, run_id)

    def _start(self, stage: str, run_id: str | None) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or LOCAL_STORE)
        if run_id:
            client.get_run(run_id)  # the train stage's run: evaluate adds to it
        else:
            experiment = client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
            commit = git_commit()
            exp_name = os.environ.get("DVC_EXP_NAME", "")
            tags = {"git.commit": commit, "dvc.exp_name": exp_name, "stage": stage, "mlflow.source.git.commit": commit}
            run_name = "-".join(filter(None, [exp_name or stage, commit[:7]]))
            run_id = client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
        self._client, self.run_id = client, run_id
        log.info(f"mlflow: run {run_id} at {client.tracking_uri}")

    def _call(self, fn) -> None:
        """Run one logging call, unless an earlier failure turned tracking off."""
        if self._client is not None:
            self._try(fn)

    def _try(self, fn, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:  # tracking is best effort: training results must survive it
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            log.warning(f"warning: mlflow tracking is off for this stage ({reason}); results are still written")
            self._client = None

    def log_params(self, params: dict[str, str]) -> None:
        self._call(lambda: self._client.log_batch(self.run_id, params=_to_params(params)))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._call(lambda: self._client.log_batch(self.run_id, metrics=_to_metrics(metrics, step)))

    def log_history(self, rows: Iterable[dict[str, Any]], prefix: str = "") -> None:
        """Per-step rows ({"step": 3, "loss": ...}) as metric histories, in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{prefix}{k}", float(v), now, int(row["step"]))
            for row in rows
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float))
        ]
        for i in range(0, len(metrics), 1000):  # the REST API takes at most 1000 per batch
            self._call(lambda chunk=metrics[i : i + 1000]: self._client.log_batch(self.run_id, metrics=chunk))

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            if path.exists():
                self._call(lambda p=path: self._upload(p, folder))

    def _upload(self, path: Path, folder: str | None) -> None:
        upload = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
        upload(self.run_id, str(path), folder)

    def finish(self, status: str = "FINISHED") -> None:
        self._call(lambda: self._client.set_terminated(self.run_id, status))


def _to_params(params: dict[str, str]):
    from mlflow.entities import Param

    return [Param(k, v[:6000]) for k, v in params.items()]


def _to_metrics(metrics: dict[str, float], step: int | None):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, (int, float))]
