"""Publishing to the Hugging Face Hub: the model card, the dry run, and where the token may go."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from lorapipe.core.artifacts import EXPORT_COMMAND
from tests.workspace import assert_one_line_error, child_env, free_port, params_of

# Built at run time, so this file holds no credential-shaped string for the security scan to find.
FAKE_TOKEN = "hf_" + "FAKEnotReal" * 3


def publish(repo, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lorapipe.reporting.publish", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(**{"HF_TOKEN": FAKE_TOKEN, **env}),
    )


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


# The demo's base is a local GGUF: its stand-in "Hub id" is a folder of the Hub stand-in below.
BASE_ID = "local/smollm2-base"


def python_block(card: str, heading: str) -> str:
    return re.search(rf"## {heading}.*?```python\n(.*?)```", card, re.S).group(1)


@pytest.mark.slow
def test_dry_run_puts_the_repo_together_and_prints_the_card(readme_flow, tmp_path):
    repo, out = readme_flow.repo, tmp_path / "you/product-descriptions"
    pinned = ("--base-model", f"{BASE_ID}@abc123")
    result = publish(repo, "you/product-descriptions", "--dry-run", *pinned, "--out", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"):
        assert name in result.stdout and (out / name).is_file()
    assert "dry run: nothing uploaded" in result.stderr

    card = (out / "README.md").read_text()
    assert card in result.stdout  # --dry-run prints the card
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "peft" and meta["base_model"] == BASE_ID
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_ID and config["revision"] == "abc123"
    assert 'revision="abc123"' in python_block(card, "How to use")
    # The data version is the raw file's checksum; no local path of this machine leaks into the card.
    download = json.loads((repo / "metrics/download.json").read_text())
    assert f"sha256\n`{download['sha256']}`" in card and ".cache/" not in card and "md5" not in card
    assert "Extreme Classification Repository" in card and "No open licence" in card
    scores = yaml.safe_load((repo / "metrics/eval_details.json").read_text())
    rouge = next(line for line in card.splitlines() if line.startswith("| ROUGE-L "))
    cells = [c.strip() for c in rouge.strip("|").split("|")]
    assert cells[1:3] == [f"{scores['base']['rougeL']:.3f}", f"{scores['tuned']['rougeL']:.3f}"]
    assert "SYNTHETIC" in card and "r: 4" in card and "b179c952" in card  # the workspace's run: lora.r=4
    assert "<|im_start|>system\nWrite the product description" in card  # the exact prompt of an example
    assert "Intended use and limits" in card and "## License" in card
    assert FAKE_TOKEN not in card + result.stdout + result.stderr


@pytest.mark.slow
def test_a_local_base_needs_its_hub_id_for_an_adapter(readme_flow, tmp_path):
    result = publish(readme_flow.repo, "you/x", "--dry-run", "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "came from a local file", "--base-model", "--merged")
    assert not (tmp_path / "out").exists()
    bad = publish(readme_flow.repo, "you/x", "--dry-run", "--base-model", "not-a-hub-id", "--out", str(tmp_path / "o"))
    assert_one_line_error(bad, "--base-model 'not-a-hub-id'", "owner/name")


@pytest.mark.slow
def test_published_adapter_loads_from_a_hub_stand_in_and_decodes_like_evaluate(readme_flow, tmp_path):
    """A new user's view: the uploaded folder, in another directory, run with the card's own snippet."""
    repo, hub = readme_flow.repo, tmp_path / "hub"
    shutil.copytree(repo / "models/base", hub / BASE_ID)  # the base's Hub repo
    out = hub / "you/product-descriptions"
    result = publish(repo, "you/product-descriptions", "--dry-run", "--base-model", BASE_ID, "--out", str(out))
    assert result.returncode == 0, result.stderr

    samples = [json.loads(line) for line in (repo / "metrics/eval_samples.jsonl").read_text().splitlines()]
    snippet = python_block((out / "README.md").read_text(), "How to use")
    titles = [s["title"] for s in samples]
    check = (
        f"{snippet}\n\nimport json\nprint(json.dumps([describe(t) for t in {titles!r}]))\n"
        "from peft import AutoPeftModelForCausalLM\n"  # the card's Hub id resolves as a model (unquantized)
        "print(type(AutoPeftModelForCausalLM.from_pretrained('you/product-descriptions')).__name__)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", check],
        cwd=hub,  # Hub ids resolve to the stand-in's folders; nothing of the repo is reachable
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"},
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    lines = ran.stdout.strip().splitlines()
    assert json.loads(lines[-2]) == [s["tuned"] for s in samples]
    assert lines[-1] == "PeftModelForCausalLM"


@pytest.mark.slow
def test_dry_run_of_the_merged_model_with_its_gguf(readme_flow, tmp_path):
    out = tmp_path / "merged-repo"
    result = publish(readme_flow.repo, "you/product-descriptions", "--merged", "--gguf", "--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert {"model.safetensors", "model-F16.gguf", "model-Q8_0.gguf", "Modelfile", "README.md"} <= set(names)
    assert "adapter_config.json" not in names
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and "base_model" not in meta and "gguf" in meta["tags"]
    assert "AutoModelForCausalLM.from_pretrained" in card and "PeftModel" not in card
    assert "ollama create product-descriptions -f Modelfile" in card and "model-Q8_0.gguf Modelfile" in card
    # Where the base came from is what base_model.json recorded: a local GGUF file, not the Hub.
    assert "the local GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf` (sha256 `b179c952" in card and ".cache/" not in card
    assert "from the Hugging Face Hub" not in card.replace("not downloaded from the Hugging Face Hub", "")
    assert "`pip install torch transformers`" in card  # a merged model needs neither peft nor bitsandbytes
    scores = json.loads((readme_flow.repo / "metrics/eval_details.json").read_text())["tuned"]
    [result] = meta["model-index"][0]["results"]
    assert {m["name"]: m["value"] for m in result["metrics"]} == {
        "ROUGE-L": scores["rougeL"],
        "BLEU": scores["bleu"],
        "perplexity": scores["perplexity"],
    }
    # The workspace's params are the lora.r=4 experiment's, never committed: the card says so instead of citing HEAD.
    experiment = readme_flow.experiments["4"]
    assert f"in the DVC experiment `{experiment}`, on top of commit" in card and "r: 4" in card


@pytest.mark.slow
def test_upload_needs_hf_token_and_fails_in_one_line_without_leaking_it(readme_flow):
    repo = readme_flow.repo
    base = ("--base-model", BASE_ID)
    for settings, fragment in (({"HF_TOKEN": ""}, "HF_TOKEN is not set"), ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE")):
        unset = publish(repo, "you/x", *base, **settings)
        assert_one_line_error(unset, fragment)
        assert unset.stdout == ""  # said before the card is built and the files staged
    # A Hub that refuses the connection: the real client, one line, the token nowhere.
    refused = publish(repo, "you/x", *base, HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(refused, "upload to you/x failed")
    assert FAKE_TOKEN not in refused.stdout + refused.stderr


def test_publish_reads_the_metrics_as_json_so_every_score_is_a_number(tiny_model_dir, tmp_path):
    """json.dumps writes a small score as `5e-05`, which YAML 1.1 (PyYAML) reads as a string: the card's
    scores table and the Hub's model-index get numbers."""
    from lorapipe.core.params import LoraParams, QuantParams, TrainParams
    from lorapipe.train.training_record import ADAPTER_FILES, TrainingRecord, save_training_record
    from tests.workspace import committed_params_text

    trained = tmp_path / "models/trained"
    shutil.copytree(tiny_model_dir, trained, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    for name in ADAPTER_FILES:  # staged, never loaded, by a dry run
        (trained / name).write_text("{}")
    save_training_record(trained, TrainingRecord(params_of(TrainParams), params_of(LoraParams), params_of(QuantParams)))
    (tmp_path / "params.yaml").write_text(committed_params_text())
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "base_model.json").write_text(json.dumps(HUB_BASE))
    (metrics / "download.json").write_text(json.dumps({"sha256": "ab" * 32}))
    scores = {"base": {"bleu": 5e-05, "rougeL": 0.1, "perplexity": 30.0}, "samples": 4}
    scores["tuned"] = {"bleu": 6e-05, "rougeL": 0.2, "perplexity": 12.5}
    (metrics / "eval_details.json").write_text(json.dumps(scores))
    assert '"bleu": 6e-05' in (metrics / "eval_details.json").read_text()
    result = publish(tmp_path, "you/x", "--dry-run", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    card = (tmp_path / "out/README.md").read_text()
    [index] = front_matter(card)["model-index"]
    values = {m["type"]: m["value"] for m in index["results"][0]["metrics"]}
    assert values == {"bleu": 6e-05, "rouge": 0.2, "perplexity": 12.5}
    assert all(isinstance(value, float) for value in values.values())


def test_bad_repo_id_and_missing_run_are_one_line_errors(tmp_path):
    assert_one_line_error(publish(tmp_path, "not a repo id", "--dry-run"), "expected owner/name")
    assert_one_line_error(publish(tmp_path, "you/x", "--dry-run"), "models/trained", "dvc repro")
    assert_one_line_error(publish(tmp_path, "you/x", "--merged", "--dry-run"), EXPORT_COMMAND)
    (tmp_path / "models/trained").mkdir(parents=True)
    (tmp_path / "models/trained/adapter_model.safetensors").write_bytes(b"")
    assert_one_line_error(publish(tmp_path, "you/x", "--gguf", "--dry-run"), "models/gguf", EXPORT_COMMAND)


def card_facts(origin: dict, merged: bool, base: tuple[str, str] | None = None, bits: int = 4, method: str = "lora"):
    """The card's facts of a run, built as publish builds them from the run's files."""
    from lorapipe.core.params import EvalParams, LoraParams, QuantParams, TrainParams
    from lorapipe.model.decoding import decoding_record
    from lorapipe.reporting.model_card import BaseModel, BaseOrigin, CardFacts
    from lorapipe.train.training_record import TrainingRecord

    scores = {"base": {"bleu": 1.5, "rougeL": 0.1, "perplexity": 30.0}, "samples": 32}
    scores["tuned"] = {"bleu": 4.25, "rougeL": 0.215, "perplexity": 12.5}
    return CardFacts(
        repo_id="you/product-descriptions",
        merged=merged,
        base=BaseModel(*base) if base else None,
        origin=BaseOrigin.from_record(origin),
        params={"data": {"url": "data/synthetic/trn.json.gz"}},
        trained=TrainingRecord(
            params_of(TrainParams), params_of(LoraParams, method=method), params_of(QuantParams, bits=bits)
        ),
        decoding=decoding_record(params_of(EvalParams)),
        chat_template=False,
        prompt_example="",
        download={},
        scores=scores,
        trained_at="at commit `c0ffee`",
        license="apache-2.0",
    )


GGUF_BASE = {"name": ".cache/models/base.Q4_1.gguf", "kind": "gguf", "sha256": "b179c9523d0e", "bytes": 1}
HUB_BASE = {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "kind": "hub", "revision": "12fd25f7", "bytes": 1}


def test_card_of_a_local_gguf_base_says_so_and_invents_no_hub_id():
    from lorapipe.reporting.model_card import model_card

    card = model_card(card_facts(GGUF_BASE, merged=True))
    meta = front_matter(card)
    assert "base_model" not in meta  # no Hub id to name
    assert "Base model: the local GGUF file `base.Q4_1.gguf` (sha256 `b179c9523d0e`), dequantized" in card
    assert "Hugging Face Hub" not in card.replace("not downloaded from the Hugging Face Hub", "")
    assert ".cache/" not in card
    assert "`pip install torch transformers`. " in card and "bitsandbytes" not in card
    [index] = meta["model-index"]
    [result] = index["results"]
    assert index["name"] == "product-descriptions" and result["task"]["type"] == "text-generation"
    assert result["dataset"]["split"] == "test"
    metrics = {m["type"]: (m["name"], m["value"]) for m in result["metrics"]}
    assert metrics == {"rouge": ("ROUGE-L", 0.215), "bleu": ("BLEU", 4.25), "perplexity": ("perplexity", 12.5)}


@pytest.mark.parametrize(
    ("bits", "packages"), [(4, "torch transformers peft bitsandbytes"), (16, "torch transformers peft")]
)
def test_card_of_a_hub_base_names_it_in_the_metadata_and_asks_only_for_what_loading_needs(bits, packages):
    from lorapipe.reporting.model_card import model_card

    card = model_card(card_facts(HUB_BASE, merged=False, base=(HUB_BASE["name"], "12fd25f7"), bits=bits))
    assert front_matter(card)["base_model"] == HUB_BASE["name"]
    assert "Base model: `HuggingFaceTB/SmolLM2-135M-Instruct` from the Hugging Face Hub at revision `12fd25f7`." in card
    assert f"`pip install {packages}`. " in card
    assert ("BitsAndBytesConfig" in python_block(card, "How to use")) == (bits < 16)


def test_card_cites_the_commit_only_when_its_params_are_the_trained_ones(tmp_path, monkeypatch):
    from lorapipe.reporting.publish import trained_at
    from lorapipe.train.training_record import training_record_from
    from tests.workspace import commit, default_params, sh, write_param_files

    params = default_params()
    write_param_files(tmp_path, params)
    sh(tmp_path, "git", "init", "-q")
    commit(tmp_path, "params")
    head = sh(tmp_path, "git", "rev-parse", "HEAD").stdout.strip()
    monkeypatch.chdir(tmp_path)
    assert trained_at(training_record_from(params), "exp-1") == f"at commit `{head}`"
    # `dvc exp run -S lora.r=8`: the run record says r=8, HEAD's params.yaml still r=16.
    experiment = training_record_from({**params, "lora": {**params["lora"], "r": 8}})
    assert trained_at(experiment, "exp-1").startswith(f"in the DVC experiment `exp-1`, on top of commit `{head}` whose")
    assert "not committed" in trained_at(experiment, None)


@pytest.mark.parametrize("bits", [4, 8])
def test_card_loads_the_base_with_the_quantization_config_training_used(bits):
    """The card's BitsAndBytesConfig is rendered from modeling.quantization_config's object, not mirrored."""
    import torch
    from transformers import BitsAndBytesConfig

    from lorapipe.core.params import QuantParams
    from lorapipe.model.modeling import quantization_config
    from lorapipe.reporting.model_card import model_card

    card = model_card(card_facts(HUB_BASE, merged=False, base=(HUB_BASE["name"], "12fd25f7"), bits=bits))
    code = re.search(r"quantization_config=(.*?),\n\)\.dequantize\(\)", python_block(card, "How to use"), re.S).group(1)
    shown = eval(code, {"BitsAndBytesConfig": BitsAndBytesConfig, "torch": torch})  # our own card's text
    assert shown.to_dict() == quantization_config(params_of(QuantParams, bits=bits), torch.float32).to_dict()


def test_card_renders_the_decoding_record_in_its_snippet_and_llama_cpp_line():
    import dataclasses

    from lorapipe.core.params import EvalParams
    from lorapipe.model.decoding import decoding_record
    from lorapipe.reporting.model_card import model_card

    sampling = params_of(EvalParams, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=64)
    facts = card_facts(GGUF_BASE, merged=True)
    card = model_card(dataclasses.replace(facts, decoding=decoding_record(sampling), gguf_files=["model-Q8_0.gguf"]))
    snippet = python_block(card, "How to use")
    assert "**ids, max_new_tokens=64, do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.0,\n" in snippet
    assert "-n 64 --repeat-penalty 1 --temp 0.7 --top-p 0.9\n" in card and "Sampling on 32 held-out" in card
    greedy = model_card(dataclasses.replace(facts, gguf_files=["model-Q8_0.gguf"]))
    assert "max_new_tokens=256, do_sample=False, repetition_penalty=1.0,\n" in python_block(greedy, "How to use")
    assert "-n 256 --repeat-penalty 1 --temp 0\n" in greedy and "Greedy decoding on 32 held-out" in greedy


def test_card_of_each_method_says_what_was_trained():
    """A fully tuned model is self-contained (publish passes it as merged): no peft, no base to load."""
    from lorapipe.reporting.model_card import model_card

    full = model_card(card_facts(HUB_BASE, merged=True, bits=16, method="full"))
    assert "A fully fine-tuned model (every weight of the base trained) for `HuggingFaceTB" in full
    assert "  method: full" in full  # the record, in the Training section
    assert "PeftModel" not in full and 'AutoModelForCausalLM.from_pretrained("you/product-descriptions"' in full
    dora = model_card(
        card_facts(HUB_BASE, merged=False, base=("HuggingFaceTB/SmolLM2-135M-Instruct", "12fd25f7"), method="dora")
    )
    assert "A DoRA adapter for `HuggingFaceTB/SmolLM2-135M-Instruct`" in dora and "PeftModel" in dora
    merged = model_card(card_facts(HUB_BASE, merged=True, method="rslora"))
    assert "A model (rsLoRA adapter merged into the base)" in merged
