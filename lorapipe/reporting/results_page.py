"""Render one static HTML page of all experiments: the `dvc exp show` table, `dvc plots` curves, samples.

    python -m lorapipe.reporting.results_page [-o results/index.html]

The page is one self-contained file: charts are inline SVG rendered here from the Vega-Lite
specs `dvc plots` gives, with no scripts and nothing fetched, so it opens from disk offline.
Each experiment's tuned-vs-base deltas carry their 95% bootstrap interval over its test samples
(artifacts.EVAL_SCORES), and every pair of experiments is compared tuned against tuned,
paired over the samples both scored, so a sweep is ranked on differences that are not noise.
The `workspace` row is left out when it only repeats the run it came from (after `dvc exp run`).
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_JSON, EVAL_SCORES, TRAIN_JSON
from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.metric_files import DETAILS, read_record
from lorapipe.core.outputs import atomic_path
from lorapipe.core.params import flatten
from lorapipe.core.vcs import WORKSPACE, commit_of, dvc_json
from lorapipe.eval.eval_files import read_samples, read_scores
from lorapipe.reporting import data_changes
from lorapipe.reporting.charts import scores_spec, svg
from lorapipe.reporting.compare import HEALTH, METRICS, Change, run_vs_run
from lorapipe.reporting.report import SAMPLE_COLUMNS, bar_scores, rev_label, sample_texts, shorten, visible_text
from lorapipe.reporting.scores_table import HEALTH_NOTE, ScoreRow, html_cell, score_rows
from lorapipe.reporting.study_sections import html_table, study_sections

EVAL, TRAIN = str(EVAL_JSON), str(TRAIN_JSON)  # as `dvc exp show` names them; a row holds their whole records
# The scores and training figures worth comparing at a glance. Scores: (column of the scores table,
# metric, title); a delta shows its 95% interval when the experiment has per-sample scores.
SCORE_COLUMNS = [
    ("tuned", "rougeL", "ROUGE-L"),
    ("delta", "rougeL", "Δ ROUGE-L (95% CI)"),
    ("tuned", "bleu", "BLEU"),
    ("delta", "bleu", "Δ BLEU (95% CI)"),
]
TRAIN_COLUMNS = [("val_loss", "val loss"), ("tokens_per_s", "tokens/s")]  # (training record key, title)
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1f2328; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; }
code { background: #f6f8fa; padding: 1px 4px; }
"""


def experiment_rows(show: list[dict]) -> list[dict]:
    """One row per workspace, commit and experiment of `dvc exp show --json`; failed runs are left out."""
    entries = []
    for commit in show:
        entries.append((commit.get("name") or rev_label(commit["rev"]), commit))
        for exp in commit.get("experiments") or []:
            entries += [(rev.get("name") or rev_label(rev["rev"]), rev) for rev in exp.get("revs", [])]
    rows = []
    for name, entry in entries:
        data = entry.get("data") or {}
        nested = {path: m.get("data") or {} for path, m in (data.get("metrics") or {}).items()}
        # `dvc exp show` holds the headline figures; the tables and studies read each run's whole records
        rev = commit_of(entry["rev"])
        nested.update({str(path): record for path in DETAILS if (record := read_record(path, rev)) is not None})
        metrics = {path: flatten(values) for path, values in nested.items()}
        if entry.get("error") or not any(metrics.values()):
            continue  # a failed experiment, or a commit the pipeline never ran on
        params = flatten(data.get("params", {}).get("params.yaml", {}).get("data", {}))
        row = {"name": name, "rev": entry["rev"], "params": params, "metrics": metrics, "in_workspace": False}
        row["time"] = data.get("timestamp") or "~"  # ISO 8601; the workspace (none) sorts after every commit
        rows.append({**row, "eval": nested.get(EVAL)})
    return rows


def drop_repeated_workspace(rows: list[dict]) -> None:
    """After `dvc exp run` the workspace holds that experiment's results: when its params, metrics and
    per-sample scores are a listed run's, its row would repeat that run's, so it is left out and that run
    is marked `in_workspace`. (Same metrics is one run: the training record's timings differ from run to run.)"""
    workspace = next((row for row in rows if row["rev"] == WORKSPACE), None)
    same = [row for row in rows if workspace and row is not workspace and row_data(row) == row_data(workspace)]
    if same:
        rows.remove(workspace)
        same[0]["in_workspace"] = True


def row_data(row: dict) -> tuple[dict, dict, list[dict] | None]:
    return row["params"], row["metrics"], row["samples"]


def add_scores(rows: list[dict]) -> None:
    """Each row's per-sample scores (EVAL_SCORES; None where the revision has none) and its scores
    table by metric (base, tuned, delta), each delta with its 95% interval when it has per-sample scores."""
    for row in rows:
        row["samples"] = read_scores(commit_of(row["rev"]))
        row["scores"] = {r.metric: r for r in score_rows(row["eval"], row["samples"])}
        row["health"] = {r.metric: r for r in score_rows(row["eval"], row["samples"], health=True)}


def varying_params(rows: list[dict]) -> list[str]:
    """The params keys whose values differ between rows: what the experiments changed."""
    keys = sorted({k for row in rows for k in row["params"]})
    return [k for k in keys if len({json.dumps(row["params"].get(k)) for row in rows}) > 1]


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(shorten(visible_text('—' if value is None else str(value))))}</td>"


def experiments_table(rows: list[dict]) -> str:
    params = varying_params(rows)
    titles = [*(title for _, _, title in SCORE_COLUMNS), *(title for _, title in TRAIN_COLUMNS)]
    head = ["experiment", "rev", *params, *titles]
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        values = [row["name"], rev_label(row["rev"]), *(row["params"].get(k) for k in params)]
        scores = [html_cell(row["scores"].get(metric), column) for column, metric, _ in SCORE_COLUMNS]
        training = [row["metrics"].get(TRAIN, {}).get(key) for key, _ in TRAIN_COLUMNS]
        lines.append("<tr>" + "".join([*map(cell, values), *scores, *map(cell, training)]) + "</tr>")
    return "\n".join([*lines, "</table>"])


def health_table(rows: list[dict]) -> str:
    """Each run's output health: the tuned model's value and its change from the base model (95% interval)."""
    shown = [row for row in rows if row["health"]]
    if not shown:
        return f"<p>No run has output health yet (evaluate writes it to {EVAL_DETAILS}).</p>"
    head = ["experiment", *(f"{METRICS[name].label}: tuned, Δ vs base (95% CI)" for name in HEALTH)]
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in shown:
        cells = [health_cell(row["health"].get(name)) for name in HEALTH]
        lines.append("<tr>" + cell(row["name"]) + "".join(cells) + "</tr>")
    return "\n".join([*lines, "</table>", f"<p>{html.escape(HEALTH_NOTE)}</p>"])


def health_cell(row: ScoreRow | None) -> str:
    if row is None:
        return '<td class="num">—</td>'
    interval = f" ({row.interval()})" if row.change else ""
    text = f"{row.number(row.tuned)}, {row.number(row.delta, sign=True)}{interval}"
    return f'<td class="num">{html.escape(text)}</td>'


def pair_changes(rows: list[dict]) -> list[tuple[dict, dict, dict[str, Change]]]:
    """(earlier run, later run, their tuned models' change per metric of the page) for every pair of runs
    with per-sample scores: paired over the test samples both scored where they share them."""
    scored = sorted((row for row in rows if row["samples"]), key=lambda row: row["time"])
    metrics = list(dict.fromkeys(metric for column, metric, _ in SCORE_COLUMNS if column == "delta"))
    return [
        (old, new, {name: run_vs_run(old["samples"], new["samples"], name) for name in metrics})
        for i, old in enumerate(scored)
        for new in scored[i + 1 :]
    ]


def pairs_table(pairs: list[tuple[dict, dict, dict[str, Change]]]) -> str:
    """One row per pair of runs: each metric's tuned-vs-tuned delta, its 95% interval and the verdict."""
    if not pairs:
        return f"<p>Fewer than two runs have per-sample scores ({EVAL_SCORES}).</p>"
    names = [METRICS[name].label for name in pairs[0][2]]
    head = ["experiment", "vs", *(f"Δ {name} (95% CI)" for name in names), "samples"]
    body = []
    for old, new, changes in pairs:
        first = next(iter(changes.values()))
        compared = f"{first.samples} paired" if first.paired else f"{first.samples}, unpaired (different samples)"
        deltas = [f"{c.delta_text()} ({c.bounds()}) {c.judgement()}" for c in changes.values()]
        body.append([new["name"], old["name"], *deltas, compared])
    return html_table(head, body, cell)


def data_section(rows: list[dict]) -> str:
    """What changed in each run's data against the earliest run's (lorapipe.reporting.data_changes): a line
    per run whose data is the same, the counts, examples and test split of each run whose data changed."""
    ordered = sorted(rows, key=lambda row: row["time"])
    if len(ordered) < 2:
        return "<p>One run: no other run's data to compare with.</p>"
    sides = [data_changes.read_side(commit_of(row["rev"]), row["name"], row["samples"]) for row in ordered]
    parts = []
    for side in sides[1:]:
        blocks = data_changes.data_blocks(
            sides[0], side, full=False, compared="their scores (Experiment vs experiment)"
        )
        against = f"{text(side.label)} against {text(sides[0].label)}"
        if len(blocks) == 1:  # the same data, or no dvc.lock to tell
            parts.append(f"<p>{against}: {text(blocks[0])}</p>")
        else:
            parts += [f"<h3>{against}</h3>", data_changes.html(blocks, cell, text)]
    return "\n".join(parts)


def text(value: str) -> str:
    """Plain text in HTML: escaped, with no bidirectional control."""
    return html.escape(visible_text(value))


def run_scores(rows: list[dict]) -> list[tuple[str, dict]]:
    """(experiment, its base and tuned scores) for the score bars."""
    return [(row["name"], bar_scores(list(row["scores"].values()))) for row in rows if row["scores"]]


def plot_specs(rows: list[dict]) -> list[dict]:
    """Vega-Lite specs with data, from `dvc plots diff` over every experiment (images left out)."""
    revisions = [row["name"] for row in rows if row["name"] != WORKSPACE] or [WORKSPACE]
    plots = dvc_json("plots", "diff", *revisions).get("data", {})
    return [entry["content"] for entries in plots.values() for entry in entries if entry["type"] == "vega"]


def samples_table(samples: list[dict]) -> str:
    """Model outputs are untrusted text: every cell is escaped, and cut like the report's cells."""
    return html_table(list(SAMPLE_COLUMNS), sample_texts(samples), cell)


def workspace_label(rows: list[dict]) -> str:
    """`workspace`, or `workspace: <experiment>` when the workspace holds a listed run's results."""
    return next((f"{WORKSPACE}: {row['name']}" for row in rows if row["in_workspace"]), WORKSPACE)


def render_page(rows: list[dict], specs: list[dict], samples: list[dict]) -> str:
    charts = "\n".join(f"<figure>{svg(spec)}</figure>" for spec in [*specs, scores_spec(run_scores(rows))])
    held = "".join(f" The workspace holds the results of {html.escape(r['name'])}." for r in rows if r["in_workspace"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lorapipe experiments</title>
<style>{STYLE}</style></head>
<body>
<h1>lorapipe experiments</h1>
<p>{len(rows)} runs from <code>dvc exp show</code>; columns are the params that differ between them.{held}</p>
{experiments_table(rows)}
<h2>Data</h2>
<p>Each run's data against the earliest run's, from the hashes, counts and records its data stages committed.</p>
{data_section(rows)}
<h2>Output health</h2>
<p>What BLEU and ROUGE hardly show: outputs that loop to the token limit, repeat themselves, collapse to one
template, miss the reference's length, invent figures, or only echo the title.</p>
{health_table(rows)}
<h2>Experiment vs experiment</h2>
<p>The tuned models of two runs against each other, resampled over the test samples both scored (the
same draw for both): an interval that excludes zero is a difference beyond the luck of the samples.</p>
{pairs_table(pair_changes(rows))}
<h2>Training curves and scores</h2>
<div class="charts">
{charts}
</div>
{study_sections(rows, svg, cell)}
<h2>Samples ({html.escape(workspace_label(rows))})</h2>
{samples_table(samples) if samples else "<p>No samples: run the evaluate stage.</p>"}
</body></html>
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=Path("results/index.html"))
    parser.add_argument("--samples", type=int, default=5, help="samples to show (default: %(default)s)")
    args = parser.parse_args()
    rows = experiment_rows(dvc_json("exp", "show"))
    if not rows:
        raise UserError("no experiment has metrics yet; run the pipeline first (dvc exp run)")
    add_scores(rows)
    drop_repeated_workspace(rows)
    page = render_page(rows, plot_specs(rows), read_samples()[: args.samples])
    with atomic_path(args.out) as tmp:
        tmp.write_text(page)
    print(f"{args.out}: {len(rows)} runs; open it in a browser (file://{args.out.resolve()})")


if __name__ == "__main__":
    run_cli(main)
