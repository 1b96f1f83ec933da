"""Publishing to the Hugging Face Hub: the model card, the dry run, and where the token may go."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.workspace import assert_one_line_error, free_port

# Built at run time, so this file holds no credential-shaped string for the security scan to find.
FAKE_TOKEN = "hf_" + "FAKEnotReal" * 3


def publish(repo, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lorapipe.publish", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_TOKEN": FAKE_TOKEN, **env},
    )


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.slow
def test_dry_run_writes_the_card_from_the_run_and_lists_the_adapter_files(experiments):
    repo = experiments.repo
    result = publish(repo, "you/product-descriptions", "--dry-run")
    assert result.returncode == 0, result.stderr
    listed = result.stdout
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"):
        assert name in listed
    assert "dry run: nothing uploaded" in result.stderr

    card = (repo / "models/model_card.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "peft"
    assert "base_model" not in meta  # a local GGUF file is not a Hub model to link
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    raw = lock["stages"]["download"]["outs"][0]
    assert f"`{raw['path']}`: DVC md5 `{raw['md5']}`" in card
    scores = yaml.safe_load((repo / "metrics/eval.json").read_text())
    assert f"| rougeL | {scores['base']['rougeL']:.4f} | {scores['tuned']['rougeL']:.4f} |" in card
    assert "SYNTHETIC" in card and "r: 8" in card and "b179c952" in card
    assert "Intended use and limits" in card and "## License" in card
    assert FAKE_TOKEN not in card + result.stdout + result.stderr


@pytest.mark.slow
def test_dry_run_of_the_merged_model(experiments):
    result = publish(experiments.repo, "you/product-descriptions", "--merged", "--dry-run", "--card", "card.md")
    assert result.returncode == 0, result.stderr
    assert "model.safetensors" in result.stdout and "adapter_config.json" not in result.stdout
    card = (experiments.repo / "card.md").read_text()
    assert front_matter(card)["library_name"] == "transformers"
    assert "AutoModelForCausalLM.from_pretrained" in card


@pytest.mark.slow
def test_upload_needs_hf_token_and_fails_in_one_line_without_leaking_it(experiments):
    repo = experiments.repo
    assert_one_line_error(publish(repo, "you/x", HF_TOKEN=""), "HF_TOKEN is not set")
    assert_one_line_error(publish(repo, "you/x", HF_HUB_OFFLINE="1"), "HF_HUB_OFFLINE")
    # A Hub that refuses the connection: the real client, one line, the token nowhere.
    refused = publish(repo, "you/x", HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(refused, "upload to you/x failed")
    assert FAKE_TOKEN not in refused.stdout + refused.stderr


def test_bad_repo_id_and_missing_run_are_one_line_errors(tmp_path):
    assert_one_line_error(publish(tmp_path, "not a repo id", "--dry-run"), "expected owner/name")
    assert_one_line_error(publish(tmp_path, "you/x", "--dry-run"), "models/adapter", "dvc repro")
    assert_one_line_error(publish(tmp_path, "you/x", "--merged", "--dry-run"), "dvc repro export/dvc.yaml")
