"""Data-parallel training: 2 processes on the CPU (torchrun, gloo) train exactly what 1 process trains."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorapipe.core.artifacts import TRAIN_LOG
from tests.workspace import (
    STUDY_RUN,
    assert_one_line_error,
    stage,
    stage_args,
    write_params,
)

# prepared's run, its micro-batches split across 2 processes; fp32: the arithmetic is compared number for number,
# bf16 would blur it.
TRAIN = {**STUDY_RUN["train"], "grad_accum": 2, "precision": "fp32"}
OPS = {"save_every": 3}


def run(ws: Path, out: str) -> str:
    args = (*stage_args("train", out, trained=f"{out}/trained"), "--checkpoints", f"{out}/checkpoints")
    result = stage(ws, "train.py", *args)
    return result.stderr


def logged(metrics: Path, column: str) -> list[float]:
    with open(metrics / TRAIN_LOG.name) as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def test_two_processes_train_the_same_steps_as_one(prepared_copy):
    from mlflow.tracking import MlflowClient

    workspace = prepared_copy
    # No dropout: each process draws its own masks, so only then are the runs comparable number for number.
    write_params(workspace, lora={"dropout": 0.0}, train=TRAIN, ops=OPS)
    run(workspace, "one")
    tracked = {**OPS, "mlflow": True}  # the two processes' run alone: one MLflow run, not one per process
    write_params(workspace, lora={"dropout": 0.0}, train={**TRAIN, "processes": 2}, ops=tracked)
    log = run(workspace, "two")
    assert "process 2 of 2" in log and "process 1 of 2" in log

    # The loss and the gradient norm (which would show a gradient summed wrongly: Adam hides its scale).
    for column in ("loss", "grad_norm"):
        torch.testing.assert_close(
            logged(workspace / "two", column), logged(workspace / "one", column), rtol=1e-3, atol=1e-5
        )
    one, two = (json.loads((workspace / f"{d}/train_details.json").read_text()) for d in ("one", "two"))
    assert (two["steps"], two["tokens"]) == (one["steps"], one["tokens"]) == (6, one["tokens"])
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    weights = [load_file(workspace / f"{d}/trained/adapter_model.safetensors") for d in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        # Summation order differs across processes; Adam magnifies that on near-zero gradients.
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-3, atol=1e-4)
    # One process tracked: one MLflow run per training, not one per process.
    client = MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lorapipe").experiment_id])
    assert len(runs) == 1


def test_grad_accum_must_split_evenly_across_processes(prepared_copy, tmp_path):
    workspace = prepared_copy
    write_params(workspace, train={**TRAIN, "processes": 2, "grad_accum": 3}, ops=OPS)
    result = stage(
        workspace,
        "train.py",
        *stage_args("train", tmp_path, trained=tmp_path / "trained"),
        "--checkpoints",
        str(tmp_path / "checkpoints"),
        check=False,
    )
    assert_one_line_error(result, "train.grad_accum (3) must be a multiple of train.processes (2)")
