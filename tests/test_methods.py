"""lora.method: DoRA, rsLoRA and full fine-tuning each train, resume exactly after an interruption, evaluate,
export and reload (plain LoRA: the rest of the suite); what cannot run is refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lorapipe.modeling import FULL_BYTES_PER_PARAM, full_finetune_refusal
from tests.workspace import (
    STUDY_RUN,
    assert_one_line_error,
    copy_workspace,
    params_of,
    stage,
    stage_args,
    train_losses,
    write_params,
)

TITLES = ["Acme Stainless Steel Travel Mug 16oz", "USB-C Charging Cable 2m", "Kids Rain Boots Size 10", "Oak Desk"]


def method_params(method: str, **sections: dict) -> dict:
    """STUDY_RUN with `method` (full on the 16-bit base it needs) and a checkpoint after step 3 and 6."""
    quant = {"bits": 16} if method == "full" else {}
    ops = {"save_every": 3, "keep_checkpoints": 2}
    return {"data": {"url": "data/trn.json.gz"}, **STUDY_RUN, "lora": {"method": method}, "quant": quant, "ops": ops}


@pytest.mark.parametrize("method", ["dora", "rslora", "full"])
def test_each_method_trains_resumes_evaluates_exports_and_reloads(prepared, tmp_path, method):
    from transformers import AutoModelForCausalLM

    from lorapipe.generation import generate_texts
    from lorapipe.modeling import load_tokenizer, load_tuned_model
    from lorapipe.params import EvalParams
    from lorapipe.prompt import encode_prompts
    from lorapipe.training_record import load_training_record, weight_files

    ws = copy_workspace(prepared, tmp_path / "ws")
    write_params(ws, **method_params(method))
    stage(ws, "train.py", *stage_args("train"), "--checkpoints", "ckpt")
    reference = train_losses(ws / "metrics")
    summary = json.loads((ws / "metrics/train.json").read_text())
    trained = ws / "models/trained"
    record = load_training_record(trained)
    weights = trained / weight_files(method)[1]
    assert record.lora.method == summary["lora_method"] == method and summary["steps"] == 6
    assert summary["weights_mb"] == pytest.approx(weights.stat().st_size / 2**20, abs=1e-3)
    assert not (trained / "adapter_config.json").exists() if method == "full" else (trained / "adapter_config.json")

    # A crash after step 3: only that checkpoint is left. The rerun resumes there and ends as the first run did.
    (run,) = (ws / "ckpt").iterdir()
    shutil.rmtree(run / "step-000006")
    resumed = stage(ws, "train.py", *stage_args("train", "resumed", trained="resumed/trained"), "--checkpoints", "ckpt")
    assert "(step 3)" in resumed.stderr
    assert train_losses(ws / "resumed") == pytest.approx(reference, rel=1e-4)

    stage(ws, "evaluate.py", *stage_args("evaluate"))
    assert json.loads((ws / "metrics/eval.json").read_text())["samples"] == 4

    write_params(ws, **method_params(method), export={"dtype": "fp32", "gguf_types": ["f16"]})
    stage(ws, "export.py")
    assert (ws / "models/gguf").glob("*f16.gguf")
    cpu, params = torch.device("cpu"), params_of(EvalParams, max_new_tokens=8, batch_size=4)
    tokenizer = load_tokenizer(ws / "models/base")
    prompts = encode_prompts(tokenizer, TITLES)
    tuned = load_tuned_model(ws / "models/base", trained, method, record.quant, torch.float32, cpu)
    expected = generate_texts(tuned, tokenizer, prompts, params)
    exported = AutoModelForCausalLM.from_pretrained(ws / "models/merged")
    assert generate_texts(exported, load_tokenizer(ws / "models/merged"), prompts, params) == expected


def test_a_full_fine_tune_decodes_in_the_app_and_the_export_as_evaluate_did(prepared, tmp_path):
    """The texts evaluate scored, decoded again one title at a time by the app and by the exported model."""
    from transformers import AutoModelForCausalLM

    from app import Describer
    from lorapipe.generation import generate_texts
    from lorapipe.modeling import load_tokenizer
    from lorapipe.params import EvalParams, TokenizeParams
    from lorapipe.prompt import encode_prompts

    ws = copy_workspace(prepared, tmp_path / "ws")
    write_params(ws, **method_params("full"), export={"dtype": "fp32", "gguf_types": ["f16"]})
    stage(ws, "train.py", *stage_args("train"), "--checkpoints", "ckpt")
    stage(ws, "evaluate.py", *stage_args("evaluate"))
    stage(ws, "export.py")
    samples = [json.loads(line) for line in (ws / "metrics/eval_samples.jsonl").read_text().splitlines()]
    params = params_of(EvalParams, **STUDY_RUN["eval"])
    app = Describer(ws / "models", params_of(TokenizeParams).prompt_tokens)
    exported = AutoModelForCausalLM.from_pretrained(ws / "models/merged")
    tokenizer = load_tokenizer(ws / "models/merged")
    for sample in samples:
        assert app.describe(sample["title"], params)[1] == sample["tuned"]
        prompt = encode_prompts(tokenizer, [sample["title"]])
        assert generate_texts(exported, tokenizer, prompt, params) == [sample["tuned"]]


def test_full_fine_tuning_on_a_quantized_base_is_refused_in_one_line(tmp_path):
    write_params(tmp_path, lora={"method": "full"}, quant={"bits": 4})
    result = stage(tmp_path, "train.py", *stage_args("train"), check=False)
    assert_one_line_error(result, "lora.method full", "quant.bits 16", "got quant.bits 4")


def test_dora_on_an_8_bit_base_is_refused_on_the_cpu_in_one_line(prepared, tmp_path):
    ws = copy_workspace(prepared, tmp_path / "ws")
    write_params(ws, **method_params("dora"), quant={"bits": 8})
    result = stage(ws, "train.py", *stage_args("train"), "--checkpoints", "ckpt", check=False)
    assert_one_line_error(result, "lora.method dora on quant.bits 8", "quant.bits 4 or 16")


def test_full_fine_tuning_that_cannot_fit_is_refused_with_what_would():
    tinyllama, t4 = 1_100_048_384, 15_828_320_256  # TinyLlama 1.1B's parameters; a T4's total memory
    message = full_finetune_refusal(tinyllama, t4, "Tesla T4")
    assert "\n" not in message and "16.4 GiB" in message and "Tesla T4 has 14.7 GiB" in message
    assert "lora.method lora, dora or rslora" in message and "at most 989M parameters" in message
    smollm2 = 134_515_008
    assert full_finetune_refusal(smollm2, 8 * 2**30, "this machine's memory") is None
    assert smollm2 * FULL_BYTES_PER_PARAM < 2.1 * 2**30
