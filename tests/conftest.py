"""Shared fixtures: the repo root, SmolLM2's GGUF, and a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_GGUF = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    if not SMOLLM2_GGUF.is_file():
        pytest.fail(f"{SMOLLM2_GGUF} is missing: run `make smollm2` (make test does it)")
    return SMOLLM2_GGUF


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer) -> Path:
    """A 2-layer random Llama saved like the base_model stage saves models (safetensors + tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=smollm2_tokenizer.bos_token_id,
        eos_token_id=smollm2_tokenizer.eos_token_id,
        pad_token_id=smollm2_tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def sh(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def ran(output: str) -> list[str]:
    """Stages that `dvc repro`/`dvc exp run` actually ran, from DVC 3's log lines."""
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, smollm2_gguf) -> Path:
    """A clone-like copy of the working tree, with the offline profile applied and committed."""
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        # metrics/ of a local run are not part of the tree a clone gets
        if (ROOT / name).is_file() and not name.startswith("metrics/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / ".cache").mkdir()
    (repo / ".cache/models").symlink_to(SMOLLM2_GGUF.parent)
    sh(repo, "git", "init", "-q")
    sh(repo, "python", "-m", "lorapipe.profile", "offline")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "offline profile")
    return repo
