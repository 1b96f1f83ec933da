"""The 4/8/16-bit study: 8-bit and 16-bit LoRA train and evaluate end to end, the training record holds what the
study compares, the documented command queues the three runs, and the results page lays them side by side."""

from __future__ import annotations

import json

import pytest
import torch

from lorapipe.reporting.study_sections import quant_spec, study_sections
from tests.workspace import (
    LOGIT_PROBE,
    STUDY_RUN,
    params_of,
    sh,
    stage,
    stage_args,
    write_params,
)


@pytest.mark.parametrize("bits", [8, 16])
def test_bits_train_and_evaluate_end_to_end(prepared_copy, bits):
    from peft import PeftModel

    from lorapipe.core.params import QuantParams
    from lorapipe.model.modeling import load_model, load_tuned_model
    from lorapipe.train.training_record import load_training_record

    ws = prepared_copy
    write_params(ws, data={"url": "data/trn.json.gz"}, **STUDY_RUN, quant={"bits": bits})
    adapter, metrics = f"models/trained-{bits}", f"metrics-{bits}"
    train = stage(ws, "train.py", *stage_args("train", metrics, trained=adapter), "--checkpoints", f"ckpt-{bits}")
    evaluate = stage(ws, "evaluate.py", *stage_args("evaluate", metrics, trained=adapter))
    # Untracked, as the tests' runs are (workspace.UNTRACKED): one line each, no store, no run to link.
    assert "mlflow: off" in train.stderr and "mlflow: off" in evaluate.stderr and not (ws / "mlflow.db").exists()
    assert json.loads((ws / metrics / "eval_run.json").read_text())["mlflow_run_id"] is None

    details = json.loads((ws / metrics / "train_details.json").read_text())
    assert details["quant_bits"] == bits and details["steps"] == 6 and details["tokens_per_s"] > 0
    assert details["peak_memory_kind"] == "cpu_peak_rss" and details["peak_memory_mb"] > 100  # torch alone is more
    size = (ws / adapter / "adapter_model.safetensors").stat().st_size
    assert details["weights_mb"] == pytest.approx(size / 2**20, abs=1e-3) and details["lora_method"] == "lora"
    assert json.loads((ws / adapter / "train_params.json").read_text())["quant"]["bits"] == bits
    scores = json.loads((ws / metrics / "eval_details.json").read_text())
    assert scores["samples"] == 4 and set(scores["tuned"]) >= {"bleu", "rougeL", "perplexity"}

    # Evaluate's merged model computes what the training-time model (8-bit or plain base + adapter) did.
    cpu, base = torch.device("cpu"), ws / "models/base"
    quant = params_of(QuantParams, bits=bits)
    trained = PeftModel.from_pretrained(load_model(base, torch.float32, cpu, quant), ws / adapter).eval()
    if bits == 8:
        assert type(trained.base_model.model.model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear8bitLt"
    merged = load_tuned_model(base, ws / adapter, "lora", load_training_record(ws / adapter).quant, torch.float32, cpu)
    ids = torch.tensor(LOGIT_PROBE)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, trained(ids).logits, atol=5e-3, rtol=0)


def test_documented_command_queues_the_three_bit_widths(repo):
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "quant.bits=4,8,16")
    try:
        shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
        queued = [rev for commit in shown for exp in commit.get("experiments") or [] for rev in exp["revs"]]
        assert sorted(rev["data"]["params"]["params.yaml"]["data"]["quant"]["bits"] for rev in queued) == [4, 8, 16]
    finally:
        sh(repo, "dvc", "queue", "remove", "--all")


def run_row(name: str, bits: int, tokens_per_s: float, memory: float, val_loss: float, rouge: float) -> dict:
    """A row as results_page.experiment_rows builds it from `dvc exp show`."""
    train = {
        "tokens_per_s": tokens_per_s,
        "peak_memory_mb": memory,
        "peak_memory_kind": "cpu_peak_rss",
        "weights_mb": 1.5,
        "val_loss": val_loss,
        "quant_bits": bits,
        "device": "cpu",
    }
    scores = {"tuned.rougeL": rouge, "tuned.bleu": 10.0, "generation_tokens_per_s": 50.0}
    metrics = {"metrics/train.json": train, "metrics/eval.json": scores}
    return {"name": name, "rev": name[:7], "params": {"quant.bits": bits}, "metrics": metrics}


def test_results_page_section_lays_the_runs_side_by_side_ordered_by_bits():
    import vl_convert

    from lorapipe.reporting.results_page import cell

    rows = [run_row("b16", 16, 90.0, 900.0, 2.1, 0.5), run_row("<b4>", 4, 60.0, 700.0, 2.3, 0.45)]
    rows.append(run_row("b8", 8, 40.0, 800.0, 2.2, 0.47))
    rows.append({"name": "untrained", "rev": "x", "params": {}, "metrics": {"metrics/split.json": {"train": 1}}})
    html = study_sections(rows, vl_convert.vegalite_to_svg, cell)
    table = html.split("<table>")[1]
    lines = [line for line in table.splitlines() if line.startswith("<tr><td>")]
    assert [line.split("</td>")[1].rsplit(">", 1)[1] for line in lines] == ["4", "8", "16"]  # the bits column
    assert "&lt;b4&gt;" in table and "<b4>" not in table and "untrained" not in table
    assert "cpu_peak_rss" in table and "Run all three" not in html
    spec = quant_spec([rows[1], rows[2], rows[0]])
    measures = {v["measure"] for v in spec["data"]["values"]}
    assert measures == {"train tokens/s", "peak memory MiB", "val loss", "ROUGE-L"}
    assert len(spec["data"]["values"]) == 4 * 3
    assert html.count("<svg") == 1


def test_results_page_leaves_out_studies_that_did_not_run_and_asks_for_missing_runs():
    """The demo alone (one run): no study section, one line naming the targets that run them; the length
    analysis shows. Two bit widths: the quantization section, asking for the third."""
    from lorapipe.reporting.results_page import cell

    lengths = {"examples": 1170, "prompt.title.budget": 75, "prompt.title.cut_share": 0.0, "description.budget": 450}
    row = run_row("only4", 4, 60.0, 700.0, 2.3, 0.45)
    row["metrics"]["metrics/lengths.json"] = lengths
    html = study_sections([row], lambda spec: "<svg></svg>", cell)
    assert "<h2>Quantization study" not in html and "<h2>Method study" not in html and "<svg" not in html
    assert "Not run yet: the quantization study (<code>make quant-study</code>" in html
    assert "the method study (<code>make method-study</code>" in html
    assert "Token lengths (1170 train examples)" in html and '<td class="num">450</td>' in html

    html = study_sections([row, run_row("b8", 8, 40.0, 800.0, 2.2, 0.47)], lambda spec: "<svg></svg>", cell)
    assert "<h2>Quantization study" in html and "quant.bits 4, 8." in html
    assert "Run all three: <code>dvc exp run --queue -S quant.bits=4,8,16 &amp;&amp; dvc exp run --run-all" in html
    assert "make quant-study" not in html and "<code>make method-study</code>" in html
