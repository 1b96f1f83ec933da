"""lora.method: DoRA and full fine-tuning each train, resume exactly after an interruption, evaluate, export and
reload (plain LoRA: the rest of the suite); rsLoRA is LoRA with another scale, which train sets and the merge keeps;
what cannot run is refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lorapipe.core.artifacts import EVAL_SAMPLES
from lorapipe.model.modeling import FULL_BYTES_PER_PARAM, full_finetune_refusal
from tests.workspace import (
    LOGIT_PROBE,
    STUDY_RUN,
    assert_one_line_error,
    params_of,
    sh,
    stage,
    stage_args,
    train_losses,
    write_params,
)


def method_params(method: str, **sections: dict) -> dict:
    """STUDY_RUN with `method` (full on the 16-bit base it needs) and a checkpoint after step 3 and 6."""
    quant = {"bits": 16} if method == "full" else {}
    ops = {"save_every": 3, "keep_checkpoints": 2}
    return {"data": {"url": "data/trn.json.gz"}, **STUDY_RUN, "lora": {"method": method}, "quant": quant, "ops": ops}


@pytest.mark.parametrize("method", ["dora", "full"])
def test_each_method_trains_resumes_evaluates_exports_and_reloads(prepared_copy, method):
    """Each method trains, resumes exactly, and the texts evaluate scored are decoded again, one title at a time,
    by the app and by the exported model."""
    from transformers import AutoModelForCausalLM

    from app import Describer
    from lorapipe.core.params import EvalParams, TokenizeParams
    from lorapipe.data.prompt import encode_prompts
    from lorapipe.model.generation import generate_texts
    from lorapipe.model.modeling import load_tokenizer
    from lorapipe.train.training_record import load_training_record, weight_files

    ws = prepared_copy
    write_params(ws, **method_params(method))
    stage(ws, "train.py", *stage_args("train"), "--checkpoints", "ckpt")
    reference = train_losses(ws / "metrics")
    summary = json.loads((ws / "metrics/train_details.json").read_text())
    trained = ws / "models/trained"
    record = load_training_record(trained)
    weights = trained / weight_files(method)[1]
    assert record.lora.method == summary["lora_method"] == method and summary["steps"] == 6
    assert summary["weights_mb"] == pytest.approx(weights.stat().st_size / 2**20, abs=1e-3)
    if method == "full":
        assert not (trained / "adapter_config.json").exists() and summary["trainable_params"] > 3_000_000
    else:  # PEFT's own switch for the method, as its config records it
        assert json.loads((trained / "adapter_config.json").read_text())[f"use_{method}"] is True

    # A crash after step 3: only that checkpoint is left. The rerun resumes there and ends as the first run did.
    (run,) = (ws / "ckpt").iterdir()
    shutil.rmtree(run / "step-000006")
    resumed = stage(ws, "train.py", *stage_args("train", "resumed", trained="resumed/trained"), "--checkpoints", "ckpt")
    assert "(step 3)" in resumed.stderr
    assert train_losses(ws / "resumed") == pytest.approx(reference, rel=1e-4)

    stage(ws, "evaluate.py", *stage_args("evaluate"))
    samples = [json.loads(line) for line in (ws / EVAL_SAMPLES).read_text().splitlines()]
    assert len(samples) == json.loads((ws / "metrics/eval_details.json").read_text())["samples"] == 4
    assert any(s["tuned"] != s["base"] for s in samples)  # the comparisons below can tell the models apart
    write_params(ws, **method_params(method), export={"dtype": "fp32", "gguf_types": ["f16"]})
    stage(ws, "export.py")
    assert (ws / "models/gguf/model-F16.gguf").is_file()
    params = params_of(EvalParams, **STUDY_RUN["eval"])
    app = Describer(ws / "models", params_of(TokenizeParams).prompt_tokens)
    exported = AutoModelForCausalLM.from_pretrained(ws / "models/merged")
    tokenizer = load_tokenizer(ws / "models/merged")
    for sample in samples:
        assert app.describe(sample["title"], params)[1] == sample["tuned"]
        prompt = encode_prompts(tokenizer, [sample["title"]])
        assert generate_texts(exported, tokenizer, prompt, params) == [sample["tuned"]]


def test_rslora_trains_with_the_rank_stabilized_scale_and_merges_with_it(tiny_model_dir, tmp_path):
    """rsLoRA is LoRA scaled by alpha/sqrt(r) instead of alpha/r (PEFT's use_rslora): its steps, checkpoints and
    resume are LoRA's, and evaluate, the export and the app all merge through load_tuned_model. Its own parts: the
    flag train sets, and the merge keeping the scale the adapter was saved with."""
    from transformers import AutoModelForCausalLM

    from lorapipe.core.params import LoraParams, QuantParams
    from lorapipe.model.modeling import add_lora, load_tuned_model

    lora = params_of(LoraParams, method="rslora", r=4, alpha=8, dropout=0.0)
    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora, False, quantized=False)
    scales = {m.scaling["default"] for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)}
    assert model.peft_config["default"].use_rslora and scales == {8 / 4**0.5}  # LoRA's would be 8 / 4
    with torch.no_grad():  # as if trained: lora_B starts at zero, which would hide any scale
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.05)
    model.save_pretrained(tmp_path / "trained")
    ids = torch.tensor(LOGIT_PROBE)
    cpu, quant = torch.device("cpu"), params_of(QuantParams, bits=16)
    merged = load_tuned_model(tiny_model_dir, tmp_path / "trained", "rslora", quant, torch.float32, cpu)
    with torch.no_grad():
        expected = model.eval()(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-4, rtol=0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert (expected - base).abs().max() > 1e-2  # the adapter moves the outputs: the comparison can tell


def test_full_fine_tuning_on_a_quantized_base_is_refused_in_one_line(tmp_path):
    write_params(tmp_path, lora={"method": "full"}, quant={"bits": 4})
    result = stage(tmp_path, "train.py", *stage_args("train"), check=False)
    assert_one_line_error(result, "lora.method full", "quant.bits 16", "got quant.bits 4")


def test_dora_on_an_8_bit_base_is_refused_on_the_cpu_in_one_line(prepared_copy):
    ws = prepared_copy
    write_params(ws, **{**method_params("dora"), "quant": {"bits": 8}})
    result = stage(ws, "train.py", *stage_args("train"), "--checkpoints", "ckpt", check=False)
    assert_one_line_error(result, "lora.method dora on quant.bits 8", "quant.bits 4 or 16")


def test_a_full_fine_tune_says_in_one_line_which_lora_keys_it_ignores(tmp_path):
    """dvc.yaml tracks the lora section statically, so `-S lora.r=8` re-runs a full fine-tune: train says why
    that trains the same model (here on no data, which stops it next)."""
    from lorapipe.core.params import LoraParams, unused_lora_keys

    assert unused_lora_keys(params_of(LoraParams)) is None  # lora, dora and rslora use every key
    write_params(tmp_path, lora={"method": "full"}, quant={"bits": 16})
    result = stage(tmp_path, "train.py", *stage_args("train"), check=False)
    said = [line for line in result.stderr.splitlines() if "are ignored" in line]
    assert said == [
        "train: lora.method full trains every weight, so lora.r, lora.alpha, lora.dropout, lora.target_modules "
        "are ignored; DVC still tracks them: a change to one re-runs train to the same model"
    ]


def test_full_fine_tuning_that_cannot_fit_is_refused_with_what_would():
    tinyllama, t4 = 1_100_048_384, 15_828_320_256  # TinyLlama 1.1B's parameters; a T4's total memory
    message = full_finetune_refusal(tinyllama, t4, "Tesla T4")
    assert "\n" not in message and "16.4 GiB" in message and "Tesla T4 has 14.7 GiB" in message
    assert "lora.method lora, dora or rslora" in message and "at most 989M parameters" in message
    smollm2 = 134_515_008
    assert full_finetune_refusal(smollm2, 8 * 2**30, "this machine's memory") is None
    assert smollm2 * FULL_BYTES_PER_PARAM < 2.1 * 2**30


def test_documented_method_command_queues_the_four_methods_on_the_16_bit_base(repo):
    from lorapipe.reporting.study_sections import METHOD_STUDY_COMMAND

    queue, run_all = METHOD_STUDY_COMMAND.split(" && ")
    assert run_all == "dvc exp run --run-all"
    sh(repo, *queue.split())
    try:
        shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
        experiments = [e for commit in shown for e in commit.get("experiments") or []]
        queued = [rev["data"]["params"]["params.yaml"]["data"] for e in experiments for rev in e["revs"]]
        assert sorted(p["lora"]["method"] for p in queued) == sorted(["lora", "dora", "rslora", "full"])
        assert {p["quant"]["bits"] for p in queued} == {16}
    finally:
        sh(repo, "dvc", "queue", "remove", "--all")


def test_results_page_lays_the_methods_side_by_side_with_their_intervals():
    from lorapipe.reporting.results_page import cell
    from lorapipe.reporting.scores_table import score_rows
    from lorapipe.reporting.study_sections import study_sections

    def row(name: str, method: str, bits: int, trainable: int, weights_mb: float) -> dict:
        train = {"lora_method": method, "quant_bits": bits, "trainable_params": trainable, "tokens_per_s": 300.0}
        train |= {"peak_memory_mb": 4000.0, "peak_memory_kind": "cpu_peak_rss", "weights_mb": weights_mb}
        train |= {"val_loss": 0.5}
        result = {"base": {"bleu": 0.65, "rougeL": 0.26}, "tuned": {"bleu": 40.0, "rougeL": 0.55}}
        metrics = {"metrics/train.json": train, "metrics/eval.json": {"tuned.rougeL": 0.55, "tuned.bleu": 40.0}}
        scores = {r.metric: r for r in score_rows(result)}
        return {"name": name, "rev": name, "params": {}, "metrics": metrics, "scores": scores}

    rows = [row("full", "full", 16, 134_515_008, 513.0), row("qlora", "lora", 4, 4_884_480, 18.6)]
    rows.append(row("dora", "dora", 16, 5_000_000, 19.0))
    html = study_sections(rows, lambda spec: "<svg></svg>", cell)
    section = html.split("Method study")[1]
    table = section.split("<table>")[1]
    names = [
        line.split("</td>")[0].removeprefix("<tr><td>") for line in table.splitlines() if line.startswith("<tr><td>")
    ]
    assert names == ["qlora", "dora", "full"]  # METHODS' order
    assert "134,515,008" in table or "134515008" in table
    assert "Δ ROUGE-L vs base (95% CI)" in table and "+39.35" in table and "+0.290" in table
    assert "Run all four" in section and "lora.method=lora,dora,rslora,full -S quant.bits=16" in section
    # The quantization study compares LoRA runs alone: one bit width among them is no study.
    assert "Quantization study" not in html and "<code>make quant-study</code>" in html
