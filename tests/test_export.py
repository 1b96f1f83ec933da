"""The export stage: the adapter merged into plain safetensors that load without peft."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from lorapipe.core.artifacts import EXPORT_JSON, MERGED
from lorapipe.core.params import EvalParams, QuantParams, load_params
from lorapipe.data.prompt import encode_prompts
from lorapipe.model.generation import generate_texts
from lorapipe.model.modeling import load_model, load_tokenizer
from tests.workspace import TITLES, assert_one_line_error, params_of, stage


def test_merged_model_decodes_like_the_adapter_model(exported):
    """Greedy output of the merged fp32 export equals nf4 base + unmerged adapter, as trained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ws = exported
    assert not list((ws / "models/merged").glob("*.bin"))
    assert "quantization_config" not in json.loads((ws / "models/merged/config.json").read_text())

    cpu, params = torch.device("cpu"), params_of(EvalParams, max_new_tokens=16, batch_size=4)
    tokenizer = load_tokenizer(ws / "models/base")
    prompts = encode_prompts(tokenizer, TITLES)
    adapter_model = PeftModel.from_pretrained(
        load_model(ws / "models/base", torch.float32, cpu, params_of(QuantParams)), ws / "models/trained"
    )
    expected = generate_texts(adapter_model, tokenizer, prompts, params)
    merged = AutoModelForCausalLM.from_pretrained(ws / "models/merged")
    assert generate_texts(merged, load_tokenizer(ws / "models/merged"), prompts, params) == expected
    # The untuned base decodes differently: the comparison above can tell the models apart.
    assert generate_texts(load_model(ws / "models/base", torch.float32, cpu), tokenizer, prompts, params) != expected


@pytest.mark.slow
def test_default_export_is_bf16_with_decoding_settings_and_loads_without_peft(readme_flow):
    """The demo's export (export.dtype auto on the CPU) of SmolLM2: bf16 weights, the eval params' decoding
    record as its generation_config.json, and a plain transformers loads and runs it."""
    repo = readme_flow.repo
    out = repo / MERGED
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118 (not a dict)
    generation = json.loads((out / "generation_config.json").read_text())
    eval_params = load_params(EvalParams, repo)  # the run's (QUICK_RUN), not the defaults
    assert generation["max_new_tokens"] == eval_params.max_new_tokens != params_of(EvalParams).max_new_tokens
    assert generation["do_sample"] is False and "temperature" not in generation
    metrics = json.loads((repo / EXPORT_JSON).read_text())
    assert metrics["dtype"] == "bf16" and metrics["size_mb"] > 0

    # A user's plain transformers, with peft not importable at all.
    code = (
        "import sys; sys.modules['peft'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}); t = AutoTokenizer.from_pretrained({str(out)!r})\n"
        "ids = t('Oak Desk', return_tensors='pt')\n"
        "print(m.dtype, m.generate(**ids, max_new_tokens=3).shape[1] > ids['input_ids'].shape[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["torch.bfloat16", "True"]


def test_export_without_adapter_is_one_line_error(tuned_workspace, tmp_path):
    none, out = str(tmp_path / "none"), str(tmp_path / "m")
    args = ("--trained", none, "--out", out, "--gguf", str(tmp_path / "g"), "--metrics", str(tmp_path / "x.json"))
    result = stage(tuned_workspace, "export.py", *args, check=False)
    assert_one_line_error(result, "nothing trained (train_params.json missing)", "dvc repro train")
    assert not (tmp_path / "m").exists()
