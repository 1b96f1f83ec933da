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

from tests.conftest import child_env
from tests.workspace import assert_one_line_error, free_port

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
def test_dry_run_puts_the_repo_together_and_prints_the_card(experiments, tmp_path):
    repo, out = experiments.repo, tmp_path / "you/product-descriptions"
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
    scores = yaml.safe_load((repo / "metrics/eval.json").read_text())
    rouge = next(line for line in card.splitlines() if line.startswith("| ROUGE-L "))
    cells = [c.strip() for c in rouge.strip("|").split("|")]
    assert cells[1:3] == [f"{scores['base']['rougeL']:.3f}", f"{scores['tuned']['rougeL']:.3f}"]
    assert "SYNTHETIC" in card and "r: 8" in card and "b179c952" in card
    assert "<|im_start|>system\nWrite the product description" in card  # the exact prompt of an example
    assert "Intended use and limits" in card and "## License" in card
    assert FAKE_TOKEN not in card + result.stdout + result.stderr


@pytest.mark.slow
def test_a_local_base_needs_its_hub_id_for_an_adapter(experiments, tmp_path):
    result = publish(experiments.repo, "you/x", "--dry-run", "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "came from a local file", "--base-model", "--merged")
    assert not (tmp_path / "out").exists()
    bad = publish(experiments.repo, "you/x", "--dry-run", "--base-model", "not-a-hub-id", "--out", str(tmp_path / "o"))
    assert_one_line_error(bad, "--base-model 'not-a-hub-id'", "owner/name")


@pytest.mark.slow
def test_published_adapter_loads_from_a_hub_stand_in_and_decodes_like_evaluate(experiments, tmp_path):
    """A new user's view: the uploaded folder, in another directory, run with the card's own snippet."""
    repo, hub = experiments.repo, tmp_path / "hub"
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
def test_dry_run_of_the_merged_model_with_its_gguf(experiments, tmp_path):
    out = tmp_path / "merged-repo"
    result = publish(experiments.repo, "you/product-descriptions", "--merged", "--gguf", "--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert {"model.safetensors", "model-F16.gguf", "model-Q8_0.gguf", "Modelfile", "README.md"} <= set(names)
    assert "adapter_config.json" not in names
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and "base_model" not in meta and "gguf" in meta["tags"]
    assert "AutoModelForCausalLM.from_pretrained" in card and "PeftModel" not in card
    assert "ollama create product-descriptions -f Modelfile" in card and "model-Q8_0.gguf Modelfile" in card
    assert "SmolLM2-135M-Instruct.Q4_1.gguf, sha256 b179c952" in card and ".cache/" not in card


@pytest.mark.slow
def test_upload_needs_hf_token_and_fails_in_one_line_without_leaking_it(experiments):
    repo = experiments.repo
    base = ("--base-model", BASE_ID)
    assert_one_line_error(publish(repo, "you/x", *base, HF_TOKEN=""), "HF_TOKEN is not set")
    assert_one_line_error(publish(repo, "you/x", *base, HF_HUB_OFFLINE="1"), "HF_HUB_OFFLINE")
    # A Hub that refuses the connection: the real client, one line, the token nowhere.
    refused = publish(repo, "you/x", *base, HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(refused, "upload to you/x failed")
    assert FAKE_TOKEN not in refused.stdout + refused.stderr


def test_bad_repo_id_and_missing_run_are_one_line_errors(tmp_path):
    assert_one_line_error(publish(tmp_path, "not a repo id", "--dry-run"), "expected owner/name")
    assert_one_line_error(publish(tmp_path, "you/x", "--dry-run"), "models/adapter", "dvc repro")
    assert_one_line_error(publish(tmp_path, "you/x", "--merged", "--dry-run"), "dvc repro export/dvc.yaml")
    (tmp_path / "models/adapter").mkdir(parents=True)
    (tmp_path / "models/adapter/adapter_model.safetensors").write_bytes(b"")
    assert_one_line_error(publish(tmp_path, "you/x", "--gguf", "--dry-run"), "models/gguf", "dvc repro export/dvc.yaml")
