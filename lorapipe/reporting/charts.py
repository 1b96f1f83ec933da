"""Vega-Lite charts of runs, rendered with vl-convert: SVG for the results page, PNG for the PR report."""

from __future__ import annotations

from typing import Any

from lorapipe.core.artifacts import TRAIN_LOG, VAL_LOG

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


def loss_spec(plots: dict[str, list[dict]], names: dict[str, str]) -> dict | None:
    """Training and validation loss of every revision on one chart, from `dvc plots diff --json` data
    (LOSS_CURVES); `names` relabels revisions. None without data."""
    values = [
        {"step": float(point["step"]), "loss": float(point[y]), "curve": curve, "run": names.get(rev, rev)}
        for path, y, curve in LOSS_CURVES
        for entry in plots.get(path, [])
        if entry.get("type") == "vega"
        for point in entry["content"]["data"]["values"]
        if point.get(y) not in (None, "") and (rev := point["rev"])
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
