"""Shared fixtures: SmolLM2's GGUF, TinyLlama's (LLaMA's) tokenizer, a tiny random Llama with SmolLM2's
tokenizer, the shared (read-only) trained workspace and repo, an S3 server, a browser. Only fixtures and
hooks live here; what tests import (ROOT, child_env, sh, ...) is in tests/workspace.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapipe.core.params import PARAM_FILES
from lorapipe.reporting.browser import chromium, has_chromium
from tests.workspace import (
    QUICK_RUN,
    ROOT,
    S3_KEY_ID,
    S3_SECRET,
    SKY_PYTHON,
    SMOLLM2_GGUF,
    STUDY_RUN,
    TUNED,
    commit,
    copy_tree,
    copy_workspace,
    data_workspace,
    free_port,
    kept_read_only,
    sh,
    stage,
    wait_for,
    write_params,
)

LLAMA_SPM_VOCAB = "models/ggml-vocab-llama-spm.gguf"  # in llama.cpp's tree: LLaMA's SentencePiece vocabulary

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # make test runs a worker per core: each worker's torch (and its child stages') takes its share of the
    # cores, since two processes each spinning on every core run many times slower than one after the other.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


# The shared fixtures that take seconds to minutes to build: a test that uses one (directly or through
# another fixture) is `heavy`, and `make test-quick`, the edit loop, leaves it out.
HEAVY_FIXTURES = {
    "tiny_model_dir",
    "prepared",
    "llama_tokenizer_dir",
    "pristine_repo",
    "experiments",
    "stricter_cleaning",
    "s3_endpoint",
    "mlflow_server",
    "browser",
    "sky_python",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.heavy)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> tuple[Path, Any]:
    """A session fixture's folder and build(folder)'s (JSON) result, made once per test run: under pytest-xdist
    the first worker to need it builds it while the others wait on a file lock, then all share it read-only."""
    from filelock import FileLock

    root = factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the run's folder, above the workers' own
    folder, result = root / name, root / f"{name}.json"
    with FileLock(root / f"{name}.lock"):
        if not result.exists():  # not built yet, or the build failed: (re)build from scratch
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            result.write_text(json.dumps(build(folder)))
    return folder, json.loads(result.read_text())


# What the pipeline writes in a checkout. Tests work in temp workspaces, never in this one.
CHECKOUT_OUTPUTS = (*PARAM_FILES, "dvc.lock", "data", "models", "metrics")


@pytest.fixture(scope="session", autouse=True)
def checkout_untouched() -> Iterator[None]:
    with ExitStack() as stack:
        for name in CHECKOUT_OUTPUTS:
            stack.enter_context(kept_read_only(ROOT / name))
        yield


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    if not SMOLLM2_GGUF.is_file():
        pytest.fail(f"{SMOLLM2_GGUF} is missing: run `make smollm2` (make test does it)")
    return SMOLLM2_GGUF


@pytest.fixture(scope="session")
def sky_python() -> Path:
    """The cloud launcher venv's python, with SkyPilot (a separate venv: its pins conflict with .venv's)."""
    if not SKY_PYTHON.is_file():
        pytest.fail(f"{SKY_PYTHON} is missing: run `make sky` (make test does it)")
    return SKY_PYTHON


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def llama_cpp_converter() -> Path:
    from lorapipe.model.gguf_export import CONVERTER_DIR

    if not (CONVERTER_DIR / "convert_hf_to_gguf.py").is_file():
        pytest.fail(f"{CONVERTER_DIR} is missing: run `make gguf-converter` (make test does it)")
    return CONVERTER_DIR


def llama_sentencepiece_model(vocab: Path) -> bytes:
    """LLaMA's SentencePiece model (TinyLlama's tokenizer.model) rebuilt from llama.cpp's vocab-only GGUF."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as sp

    fields = GGUFReader(vocab).fields
    model = sp.ModelProto()
    model.trainer_spec.model_type = sp.TrainerSpec.BPE
    model.trainer_spec.vocab_size = len(fields["tokenizer.ggml.tokens"].contents())
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id = 0, 1, 2
    model.trainer_spec.pad_id = -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = False
    for piece, score, kind in zip(
        *(fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "scores", "token_type")), strict=True
    ):
        model.pieces.add(piece=piece, score=float(score), type=int(kind))  # GGUF and SentencePiece share the kinds
    return model.SerializeToString()


@pytest.fixture(scope="session")
def llama_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, llama_cpp_converter: Path) -> Path:
    """TinyLlama's tokenizer (LLaMA SentencePiece, no chat template) as the base_model stage saves a hub
    model's: tokenizer.json, its config and the tokenizer.model."""
    from transformers import AutoTokenizer

    def build(folder: Path) -> None:
        (folder / "tokenizer.model").write_bytes(llama_sentencepiece_model(llama_cpp_converter / LLAMA_SPM_VOCAB))
        config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True, "legacy": True}))
        AutoTokenizer.from_pretrained(folder).save_pretrained(folder)

    return built_once(tmp_path_factory, "llama-tokenizer", build)[0]


@pytest.fixture(scope="session")
def llama_tokenizer(llama_tokenizer_dir: Path):
    from lorapipe.model.modeling import load_tokenizer

    return load_tokenizer(llama_tokenizer_dir)


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

    def build(folder: Path) -> None:
        LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
        smollm2_tokenizer.save_pretrained(folder)

    return built_once(tmp_path_factory, "tiny-llama", build)[0]


@pytest.fixture(scope="session")
def pristine_repo(tmp_path_factory, smollm2_gguf) -> Iterator[Path]:
    """copy_tree's repo, made once; tests get copies (`repo`)."""
    folder, _ = built_once(tmp_path_factory, "pristine-repo", lambda repo: copy_tree(repo) and None)
    with kept_read_only(folder) as repo:
        yield repo


@pytest.fixture
def repo(pristine_repo, tmp_path) -> Path:
    """A fresh copy of the pristine repo for each test: git, DVC and params as a clone has them."""
    return copy_workspace(pristine_repo, tmp_path / "repo")


@dataclass(frozen=True)
class Experiments:
    """A repo after `dvc exp run` three times (lora.r 16; lora.method dora; back to lora with lora.r 8) and the
    export; each one's output."""

    repo: Path
    first: str
    second: str
    export: str
    dora: str


@pytest.fixture(scope="session")
def experiments(tmp_path_factory, smollm2_gguf) -> Experiments:
    from lorapipe.core.artifacts import EXPORT_COMMAND

    def build(repo: Path) -> list[str]:
        copy_tree(repo)
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for section, values in QUICK_RUN.items():
            params[section].update(values)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        commit(repo, "quick run")
        first = sh(repo, "dvc", "exp", "run", "-n", "smollm2-r16").stdout
        dora = sh(repo, "dvc", "exp", "run", "-n", "smollm2-dora", "-S", "lora.method=dora").stdout
        # The workspace ends on this run, which the export and the app serve.
        second = sh(repo, "dvc", "exp", "run", "-n", "smollm2-r8", "-S", "lora.method=lora", "-S", "lora.r=8").stdout
        export = sh(repo, sys.executable, *EXPORT_COMMAND.split()[1:]).stderr  # its log
        return [first, second, export, dora]

    repo, (first, second, export, dora) = built_once(tmp_path_factory, "experiments", build)
    return Experiments(repo, first, second, export, dora)


@dataclass(frozen=True)
class StricterCleaning:
    """A repo whose commit `base` ran the data stages (download to tokenize, on the tiny Llama), then a branch
    that raised clean.min_content_chars to `min_content_chars` and re-ran what that changes; `rerun` is what
    that `dvc repro` printed. The tests' pull request that touches a cleaning rule."""

    repo: Path
    base: str
    min_content_chars: int
    rerun: str


@pytest.fixture(scope="session")
def stricter_cleaning(tmp_path_factory, tiny_model_dir) -> StricterCleaning:
    min_content_chars = 150  # the synthetic descriptions run 108 to 210 characters: a quarter of them goes

    def build(repo: Path) -> list[str]:
        copy_tree(repo)
        model = {"name": str(tiny_model_dir), "revision": "", "sha256": ""}
        write_params(repo, model=model)
        sh(repo, "dvc", "repro", "tokenize")
        commit(repo, "the baseline's data")
        base = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
        sh(repo, "git", "checkout", "-qb", "stricter-cleaning")
        write_params(repo, model=model, clean={"min_content_chars": min_content_chars})
        rerun = sh(repo, "dvc", "repro", "tokenize").stdout
        commit(repo, f"clean.min_content_chars {min_content_chars}")
        return [base, rerun]

    repo, (base, rerun) = built_once(tmp_path_factory, "stricter-cleaning", build)
    return StricterCleaning(repo, base, min_content_chars, rerun)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_model_dir) -> Iterator[Path]:
    """The tiny Llama's data built and its base outputs decoded (STUDY_RUN), as `dvc exp run` leaves them for
    every experiment of a study; read-only: each test trains in its own copy."""
    from tests.workspace import stage_args

    def build(ws: Path) -> None:
        data_workspace(ws, tiny_model_dir, **STUDY_RUN)
        stage(ws, "generate_base.py", *stage_args("generate_base"))

    with kept_read_only(built_once(tmp_path_factory, "prepared", build)[0]) as ws:
        yield ws


@pytest.fixture(scope="session")
def tuned_workspace(tmp_path_factory, tiny_model_dir) -> Iterator[Path]:
    """A workspace where the real stages built data, then trained an nf4 LoRA adapter on the tiny Llama once
    (models/trained, models/checkpoints, metrics/). Shared by many tests, so read-only: `tuned_copy` to change it."""
    from tests.workspace import stage_args

    def build(ws: Path) -> None:
        data_workspace(ws, tiny_model_dir, **TUNED)
        stage(ws, "train.py", *stage_args("train"))

    with kept_read_only(built_once(tmp_path_factory, "tuned", build)[0]) as ws:
        yield ws


@pytest.fixture
def tuned_copy(tuned_workspace, tmp_path) -> Path:
    """This test's own copy of tuned_workspace, to change params, train or export in."""
    return copy_workspace(tuned_workspace, tmp_path / "tuned")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on 127.0.0.1 with an empty bucket `dvc`."""
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, timeout=60, proc=proc)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="dvc")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (SQLite store, artifacts proxied), for the whole run."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    # A log file, not a pipe: nobody reads the server's output while it runs.
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", timeout=120, proc=proc, every=0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real device that fills up (ENOSPC). Mounting needs root (CAP_SYS_ADMIN)."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs, and mount refused: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by Selenium. CI installs it and sets LORAPIPE_REQUIRE_BROWSER=1,
    which turns a missing browser into a failure instead of a skip."""
    if not has_chromium():
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("LORAPIPE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    driver = chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()
