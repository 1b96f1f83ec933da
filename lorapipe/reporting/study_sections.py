"""Results-page sections of the studies: 4/8/16 bits, LoRA/DoRA/rsLoRA/full, and the token length analysis.

`study_sections(rows, svg, cell)` takes the page's experiment rows (`results_page.experiment_rows`, with
their `scores` from `add_scores`), its Vega-Lite-to-SVG renderer and its table-cell renderer, and returns
HTML: a table and a chart of the LoRA runs side by side by `quant.bits` (speed, memory, weights size, val
loss, scores), a table of every run by `lora.method` (trainable parameters, speed, memory, weights on
disk, val loss, BLEU and ROUGE-L with their 95% intervals against the base), and the length percentiles
and budget cuts (the histograms are `dvc plots`, drawn with the page's charts).

    dvc exp run --queue -S quant.bits=4,8,16 && dvc exp run --run-all   # the bits study (STUDY_COMMAND)
    dvc exp run --queue -S lora.method=lora,dora,rslora,full -S quant.bits=16 && dvc exp run --run-all
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from lorapipe.core.artifacts import EVAL_JSON, LENGTHS_JSON, TRAIN_JSON
from lorapipe.core.params import METHODS, flatten
from lorapipe.reporting.scores_table import html_cell

STUDY_COMMAND = "dvc exp run --queue -S quant.bits=4,8,16 && dvc exp run --run-all"
# Every method on the same 16-bit base (full fine-tuning needs it), so only the method differs.
METHOD_STUDY_COMMAND = (
    f"dvc exp run --queue -S lora.method={','.join(METHODS)} -S quant.bits=16 && dvc exp run --run-all"
)
TRAIN, EVAL, LENGTHS = str(TRAIN_JSON), str(EVAL_JSON), str(LENGTHS_JSON)  # as `dvc exp show` names them
# (metrics file, key, column title, chart it also appears in)
QUANT_COLUMNS = [
    (TRAIN, "tokens_per_s", "train tokens/s", True),
    (TRAIN, "peak_memory_mb", "peak memory MiB", True),
    (TRAIN, "peak_memory_kind", "memory measured as", False),
    (TRAIN, "weights_mb", "weights MiB", False),
    (TRAIN, "val_loss", "val loss", True),
    (EVAL, "tuned.rougeL", "ROUGE-L", True),
    (EVAL, "tuned.bleu", "BLEU", False),
    (EVAL, "generation_tokens_per_s", "generate tokens/s", False),
    (TRAIN, "device", "device", False),
]
# (training record key, column title) of the method table; then BLEU and ROUGE-L, tuned and Δ vs base (95% CI).
METHOD_COLUMNS = [
    ("trainable_params", "trainable params"),
    ("tokens_per_s", "train tokens/s"),
    ("peak_memory_mb", "peak memory MiB"),
    ("peak_memory_kind", "memory measured as"),
    ("weights_mb", "weights MiB on disk"),
    ("val_loss", "val loss"),
]
METHOD_SCORES = [("bleu", "BLEU"), ("rougeL", "ROUGE-L")]
LENGTH_ROWS = [("prompt.title", "prompt (title tokens)"), ("description", "description")]
Cell = Callable[[Any], str]
LENGTH_COLUMNS = ["budget", "cut_share", "budget_for_95pct", "budget_for_99pct", "p50", "p90", "p95", "p99", "max"]


def bits_of(row: dict) -> Any:
    """The run's quant.bits: as its training record has it, else from its params."""
    return row["metrics"].get(TRAIN, {}).get("quant_bits", row["params"].get("quant.bits"))


def bit_widths(rows: list[dict]) -> list[str]:
    """The distinct quant.bits of the rows, in their order (quant_rows orders them 4, 8, 16)."""
    return list(dict.fromkeys(str(bits_of(row)) for row in rows))


def method_of(row: dict) -> Any:
    """The run's lora.method: as its training record has it, else from its params; runs before the key were LoRA."""
    return row["metrics"].get(TRAIN, {}).get("lora_method", row["params"].get("lora.method", "lora"))


def done_rows(rows: list[dict]) -> list[dict]:
    """Runs that trained and were evaluated."""
    return [row for row in rows if row["metrics"].get(TRAIN) and row["metrics"].get(EVAL)]


def quant_rows(rows: list[dict]) -> list[dict]:
    """LoRA runs that trained and were evaluated, ordered by bits (then as listed)."""
    lora = [row for row in done_rows(rows) if method_of(row) == "lora"]
    return sorted(lora, key=lambda row: bits_of(row) if isinstance(bits_of(row), int) else 99)


def method_rows(rows: list[dict]) -> list[dict]:
    """Runs that trained and were evaluated, ordered by lora.method as METHODS lists them, then by bits."""

    def order(row: dict) -> tuple[int, int]:
        method, bits = method_of(row), bits_of(row)
        return (METHODS.index(method) if method in METHODS else 99, bits if isinstance(bits, int) else 99)

    return sorted(done_rows(rows), key=order)


def html_table(head: list[str], body: list[list[Any]], cell: Cell) -> str:
    """`<table>` of a header row and one row per `body` entry, each value rendered by `cell` (escaped)."""
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(cell(v) for v in values) + "</tr>" for values in body]
    return "\n".join([*lines, "</table>"])


def quant_table(rows: list[dict], cell: Cell) -> str:
    head = ["experiment", "quant.bits", *(title for _, _, title, _ in QUANT_COLUMNS)]
    body = [
        [row["name"], bits_of(row), *(row["metrics"][path].get(key) for path, key, _, _ in QUANT_COLUMNS)]
        for row in rows
    ]
    return html_table(head, body, cell)


def method_table(rows: list[dict], cell: Cell) -> str:
    head = ["experiment", "lora.method", "quant.bits", *(title for _, title in METHOD_COLUMNS)]
    for _, title in METHOD_SCORES:
        head += [title, f"Δ {title} vs base (95% CI)"]
    lines = html_table(head, [], cell).splitlines()[:-1]  # the header; the score cells come rendered
    for row in rows:
        values = [row["name"], method_of(row), bits_of(row), *(row["metrics"][TRAIN].get(k) for k, _ in METHOD_COLUMNS)]
        scores = row.get("scores") or {}
        rendered = "".join(html_cell(scores.get(m), c) for m, _ in METHOD_SCORES for c in ("tuned", "delta"))
        lines.append("<tr>" + "".join(cell(v) for v in values) + rendered + "</tr>")
    return "\n".join([*lines, "</table>"])


def quant_spec(rows: list[dict]) -> dict:
    """Vega-Lite: one bar per run in each of speed, memory, val loss and ROUGE-L, coloured by bits."""
    charted = [title for _, _, title, in_chart in QUANT_COLUMNS if in_chart]
    bits = bit_widths(rows)  # the legend in the rows' order: 4, 8, 16
    values = [
        {"experiment": row["name"], "bits": str(bits_of(row)), "measure": title, "value": value}
        for row in rows
        for path, key, title, in_chart in QUANT_COLUMNS
        if in_chart and isinstance(value := row["metrics"][path].get(key), (int, float))
    ]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "quant.bits: speed, memory, quality",
        "data": {"values": values},
        "facet": {"column": {"field": "measure", "type": "nominal", "title": None, "sort": charted}},
        "resolve": {"scale": {"y": "independent"}},
        "spec": {
            "width": 170,
            "height": 200,
            "mark": "bar",
            "encoding": {
                "x": {"field": "experiment", "type": "nominal", "title": None, "sort": None},
                "y": {"field": "value", "type": "quantitative", "title": None},
                "color": {"field": "bits", "type": "nominal", "title": "quant.bits", "sort": bits},
            },
        },
    }


def read_lengths(rows: list[dict]) -> dict | None:
    """lengths.json's figures under dotted keys (`prompt.title.p50`), as LENGTH_ROWS and LENGTH_COLUMNS name
    them. The stage writes nested JSON; a row's metrics are flattened already. lengths.json is a plain
    output, not a DVC metric: read from the workspace unless a row has it."""
    lengths = next((row["metrics"][LENGTHS] for row in rows if row["metrics"].get(LENGTHS)), None)
    if lengths is None and LENGTHS_JSON.is_file():
        lengths = json.loads(LENGTHS_JSON.read_text())
    return flatten(lengths) if lengths else None


def lengths_table(lengths: dict, cell: Cell) -> str:
    head = ["field", *LENGTH_COLUMNS]
    body = [[title, *(lengths.get(f"{prefix}.{c}") for c in LENGTH_COLUMNS)] for prefix, title in LENGTH_ROWS]
    return html_table(head, body, cell)


def study_sections(rows: list[dict], svg: Callable[[dict], str], cell: Cell) -> str:
    """HTML of the quantization and method studies and the length analysis, for the results page.

    A study's section shows once it ran, i.e. its runs differ in the studied key (two bit widths, two
    methods); until then one line names the make target that runs it. `svg` renders a Vega-Lite spec and
    `cell` one escaped table cell, as the page's own tables do.
    """
    runs, methods = quant_rows(rows), method_rows(rows)
    parts, not_run = [], []
    if len(bit_widths(runs)) > 1:
        shown = bit_widths(runs)
        missing = "" if len(shown) >= 3 else f" Run all three: <code>{html.escape(STUDY_COMMAND)}</code>."
        parts += [
            "<h2>Quantization study (4/8/16-bit)</h2>",
            f"<p>quant.bits {', '.join(shown)}. Peak memory is the GPU allocator's peak on a GPU and the whole "
            f"process's peak RSS on the CPU (column <em>memory measured as</em>).{missing}</p>",
            quant_table(runs, cell),
            f'<div class="charts"><figure>{svg(quant_spec(runs))}</figure></div>',
        ]
    else:
        not_run.append("the quantization study (<code>make quant-study</code>: 4, 8 and 16 bits)")
    if len({method_of(row) for row in methods}) > 1:
        shown = {method_of(row) for row in methods}
        missing = "" if shown >= set(METHODS) else f" Run all four: <code>{html.escape(METHOD_STUDY_COMMAND)}</code>."
        parts += [
            "<h2>Method study (LoRA, DoRA, rsLoRA, full fine-tuning)</h2>",
            f"<p>lora.method {', '.join(dict.fromkeys(str(method_of(row)) for row in methods))}. Weights on disk are "
            "the adapter's, or the whole model's for full fine-tuning; each Δ is tuned minus base over the test "
            f"samples, with its 95% bootstrap interval.{missing}</p>",
            method_table(methods, cell),
        ]
    else:
        not_run.append("the method study (<code>make method-study</code>: LoRA, DoRA, rsLoRA, full fine-tuning)")
    if not_run:
        parts.append(f"<p>Not run yet: {'; '.join(not_run)}.</p>")
    lengths = read_lengths(rows)
    if lengths:
        parts += [
            f"<h2>Token lengths ({lengths.get('examples', '?')} train examples)</h2>",
            "<p>What <code>tokenize.prompt_tokens</code> and <code>tokenize.response_tokens</code> cut, and the "
            "budgets that would keep 95% and 99% of the examples whole; the histograms are with the charts.</p>",
            lengths_table(lengths, cell),
        ]
    return "\n".join(parts)
