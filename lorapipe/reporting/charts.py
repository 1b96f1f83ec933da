"""Vega-Lite charts of runs, rendered with vl-convert: SVG for the results page, PNG for the PR report."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lorapipe.core.artifacts import TRAIN_LOG, VAL_LOG
from lorapipe.core.vcs import read_file

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
SCORES = (("rougeL", "ROUGE-L"), ("bleu", "BLEU"))  # the bars: the two headline text scores
# The train stage's loss logs (dvc.yaml plots): (file, y field, curve name).
LOSS_CURVES = ((str(TRAIN_LOG), "loss", "train"), (str(VAL_LOG), "val_loss", "validation"))
LOSS_LOGS = tuple(path for path, _, _ in LOSS_CURVES)


def scores_spec(runs: list[tuple[str, dict[str, float]]]) -> dict:
    """Base vs tuned ROUGE-L and BLEU bars, grouped by run: (name, {"base.rougeL": ..., ...}) each."""
    values = [
        {"run": name, "model": model, "metric": label, "value": scores[f"{model}.{key}"]}
        for name, scores in runs
        for key, label in SCORES
        for model in ("base", "tuned")
        if f"{model}.{key}" in scores
    ]
    return {
        "$schema": SCHEMA,
        "title": "base vs tuned",
        "data": {"values": values},
        "facet": {"column": {"field": "metric", "type": "nominal", "title": None}},
        "resolve": {"scale": {"y": "independent"}},
        "spec": {
            "width": 220,
            "height": 220,
            "mark": "bar",
            "encoding": {
                "x": {"field": "run", "type": "nominal", "title": None, "sort": None, "axis": {"labelAngle": 0}},
                "xOffset": {"field": "model"},
                "y": {"field": "value", "type": "quantitative", "title": None},
                "color": {"field": "model", "type": "nominal"},
            },
        },
    }


def loss_logs(rev: str | None) -> dict[str, list[dict]]:
    """The train stage's loss logs in the workspace (rev None) or at a git revision: path -> its CSV rows.
    Plain git-tracked files (dvc.yaml `cache: false`), read as `dvc plots diff` reads them, without a DVC
    process per report."""
    logs = {}
    for path in LOSS_LOGS:
        raw = read_file(rev, Path(path))
        if raw is not None:
            logs[path] = list(csv.DictReader(io.StringIO(raw.decode(errors="replace"))))
    return logs


def loss_spec(runs: list[tuple[str, dict[str, list[dict]]]]) -> dict | None:
    """Training and validation loss of every run on one chart: (name, its `loss_logs`) each. None without
    data."""
    values = [
        {"step": float(row["step"]), "loss": float(row[y]), "curve": curve, "run": name}
        for path, y, curve in LOSS_CURVES
        for name, logs in runs
        for row in logs.get(path, [])
        if row.get(y) not in (None, "")
    ]
    if not values:
        return None
    return {
        "$schema": SCHEMA,
        "title": "loss per token",
        "width": 520,
        "height": 280,
        "data": {"values": values},
        "mark": {"type": "line", "point": {"size": 20}, "opacity": 0.8},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "optimizer step"},
            "y": {"field": "loss", "type": "quantitative", "title": None, "scale": {"zero": False}},
            "color": {"field": "run", "type": "nominal", "title": None, "sort": None},
            "strokeDash": {"field": "curve", "type": "nominal", "title": None, "legend": {"symbolType": "stroke"}},
        },
    }


def svg(spec: dict[str, Any]) -> str:
    import vl_convert  # imported here: a native module that only charts need

    return vl_convert.vegalite_to_svg(spec)


def png(spec: dict[str, Any]) -> bytes:
    """PNG at twice the spec's size, sharp on high-density screens."""
    import vl_convert

    return vl_convert.vegalite_to_png(spec, scale=2)
