"""Shared fixtures and helpers: the repo root, SmolLM2's GGUF, TinyLlama's (LLaMA's) tokenizer, a tiny random Llama
with SmolLM2's tokenizer, the shared (read-only) trained workspace and repo, the environment for child processes."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_GGUF = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_SPM_VOCAB = "models/ggml-vocab-llama-spm.gguf"  # in llama.cpp's tree: LLaMA's SentencePiece vocabulary

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process (a stage, a module, a script): this checkout's lorapipe on
    PYTHONPATH, since the venv's editable install may point at another checkout; then `extra`."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT), **extra}


# Where git (and DVC, through libgit2) would find an identity, besides a repository's own .git/config.
GIT_IDENTITY_VARIABLES = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def user_machine_env(home: Path, **extra: str) -> dict[str, str]:
    """child_env as on a user's fresh machine (Colab, a container): an empty HOME, no global or system git
    config, so no git identity unless a repository has its own. .ci/run runs the whole suite like this."""
    home.mkdir(parents=True, exist_ok=True)
    env = child_env(**{"HOME": str(home), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", **extra})
    for name in (*GIT_IDENTITY_VARIABLES, "XDG_CONFIG_HOME"):
        if name not in extra:
            env.pop(name, None)
    return env


def tree_state(path: Path) -> dict[str, tuple[int, int]]:
    """Every file at or under `path` (links not followed) -> (size, mtime_ns); {} where there is none."""
    files = [path] if path.is_file() else [Path(top, name) for top, _, names in os.walk(path) for name in names]
    return {os.path.relpath(f, path.parent): (s.st_size, s.st_mtime_ns) for f in files for s in [os.lstat(f)]}


@contextmanager
def kept_read_only(path: Path) -> Iterator[Path]:
    """Yields `path`; fails afterwards if a file at or under it was added, removed or rewritten. A shared
    fixture that one test changes makes the next test's result depend on the order they ran in."""
    before = tree_state(path)
    yield path
    after = tree_state(path)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test changed {path}, which tests share read-only: {changed[:20]} (change a copy)"


# What the pipeline writes in a checkout. Tests work in temp workspaces, never in this one.
CHECKOUT_OUTPUTS = ("params.yaml", "dvc.lock", "data", "models", "metrics")


@pytest.fixture(scope="session", autouse=True)
def checkout_untouched() -> Iterator[None]:
    with ExitStack() as stack:
        for name in CHECKOUT_OUTPUTS:
            stack.enter_context(kept_read_only(ROOT / name))
        yield


def copy_workspace(source: Path, to: Path) -> Path:
    """A private copy of a shared workspace or repo, to change params or write outputs in. Without MLflow's
    local store: its experiment names the original's absolute artifact folder, so the copy's runs would
    write there; the copy's stages start a store of their own."""
    return Path(shutil.copytree(source, to, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlruns")))


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
def llama_cpp_converter() -> Path:
    from lorapipe.gguf_export import CONVERTER_DIR

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

    folder = tmp_path_factory.mktemp("llama-tokenizer")
    (folder / "tokenizer.model").write_bytes(llama_sentencepiece_model(llama_cpp_converter / LLAMA_SPM_VOCAB))
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True, "legacy": True}))
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_tokenizer(llama_tokenizer_dir: Path):
    from lorapipe.modeling import load_tokenizer

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
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def default_params() -> dict:
    """The real run: params.yaml as committed, the one home of every default. Not the working copy,
    which `make demo` rewrites with the offline profile and `dvc exp run -S` with an experiment's values."""
    from lorapipe.params import parse_yaml

    return parse_yaml(committed_params_text(), "HEAD:params.yaml")


@functools.cache
def committed_params_text() -> str:
    return subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def sh(repo: Path, *cmd: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env or child_env(), timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def ran(output: str) -> list[str]:
    """Stages that `dvc repro`/`dvc exp run` actually ran, from DVC 3's log lines."""
    return re.findall(r"Running stage '(?:[\w/.-]+:)?(\w+)'", output)  # 'export/dvc.yaml:export' too


def copy_checkout(repo: Path) -> Path:
    """The working tree's files as a clone has them (git-tracked or not ignored), SmolLM2 under .cache/,
    params.yaml = the real run's defaults; not yet a git repository."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        # a local run's metrics/ and dvc.lock (an experiment PR commits them) must not shape the tests
        if (ROOT / name).is_file() and not name.startswith("metrics/") and name != "dvc.lock":
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / ".cache").mkdir()
    (repo / ".cache/models").symlink_to(SMOLLM2_GGUF.parent)
    (repo / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    return repo


def copy_tree(repo: Path) -> Path:
    """A clone-like copy of the working tree in `repo`, with default params + the offline profile, committed."""
    copy_checkout(repo)
    sh(repo, "git", "init", "-q")
    sh(repo, "python", "-m", "lorapipe.git_identity")  # as make demo and the notebook do: DVC commits experiments
    sh(repo, "python", "-m", "lorapipe.profiles", "offline")
    commit(repo, "offline profile")
    return repo


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


@pytest.fixture(scope="session")
def pristine_repo(tmp_path_factory, smollm2_gguf) -> Iterator[Path]:
    """copy_tree's repo, made once; tests get copies (`repo`)."""
    with kept_read_only(copy_tree(tmp_path_factory.mktemp("pristine-repo"))) as repo:
        yield repo


@pytest.fixture
def repo(pristine_repo, tmp_path) -> Path:
    """A fresh copy of the pristine repo for each test: git, DVC and params as a clone has them."""
    return copy_workspace(pristine_repo, tmp_path / "repo")


# The offline profile, shortened further: a DAG run on SmolLM2 in about a minute.
QUICK_RUN = {
    "train": {"max_steps": 2, "micro_batch": 1, "grad_accum": 1, "eval_every": 1},
    "eval": {"max_samples": 4, "batch_size": 4, "max_new_tokens": 12},
}


@dataclass(frozen=True)
class Experiments:
    """A repo after `dvc exp run` twice (lora.r 16, then 8) and the export pipeline; each run's stdout."""

    repo: Path
    first: str
    second: str
    export: str


@pytest.fixture(scope="session")
def experiments(tmp_path_factory, smollm2_gguf) -> Experiments:
    repo = copy_tree(tmp_path_factory.mktemp("experiments"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in QUICK_RUN.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "quick run")
    first = sh(repo, "dvc", "exp", "run", "-n", "smollm2-r16").stdout
    second = sh(repo, "dvc", "exp", "run", "-n", "smollm2-r8", "-S", "lora.r=8").stdout
    export = sh(repo, "dvc", "repro", "export/dvc.yaml").stdout
    return Experiments(repo, first, second, export)


# The shared trained workspace's params: checkpoints at steps 10, 20 and 30 leave time to kill a rerun
# between two of them (test_training).
TUNED = {
    "sample": {"size": 300},
    "tokenize": {"seq_len": 256},
    "train": {
        "max_steps": 30,
        "micro_batch": 2,
        "grad_accum": 2,
        "lr": 0.002,
        "eval_every": 10,
        "grad_checkpointing": False,
    },
    "ops": {"save_every": 10, "keep_checkpoints": 2},
}


@pytest.fixture(scope="session")
def tuned_workspace(tmp_path_factory, tiny_model_dir) -> Iterator[Path]:
    """A workspace where the real stages built data, then trained an nf4 LoRA adapter on the tiny Llama once
    (models/adapter, models/checkpoints, metrics/). Shared by many tests, so read-only: `tuned_copy` to change it."""
    from tests.workspace import data_workspace, stage, train_args

    ws = data_workspace(tmp_path_factory.mktemp("tuned"), tiny_model_dir, **TUNED)
    stage(ws, "train.py", *train_args())
    with kept_read_only(ws):
        yield ws


@pytest.fixture
def tuned_copy(tuned_workspace, tmp_path) -> Path:
    """This test's own copy of tuned_workspace, to change params, train or export in."""
    return copy_workspace(tuned_workspace, tmp_path / "tuned")


# Built at run time, so no credential-shaped string sits in a tracked file.
S3_KEY_ID, S3_SECRET = "AKIA" + "TESTONLY" * 2, "fake/secret+key0123456789" + "abcdefABCDEF01"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on 127.0.0.1 with an empty bucket `dvc`."""
    from tests.workspace import free_port, wait_for

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


# Debian's packages by default; GitHub's runners point these at their preinstalled Chrome.
CHROMIUM = Path(os.environ.get("LORAPIPE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LORAPIPE_CHROMEDRIVER", "/usr/bin/chromedriver"))


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by Selenium. CI installs it and sets LORAPIPE_REQUIRE_BROWSER=1,
    which turns a missing browser into a failure instead of a skip."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("LORAPIPE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # No background traffic: this machine's network is closed and Chromium would keep retrying.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def save_screenshot(driver, path: Path) -> Path:
    """Screenshot to `path`; also into $LORAPIPE_SCREENSHOTS when set (how docs/images/ are made)."""
    driver.save_screenshot(str(path))
    if os.environ.get("LORAPIPE_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["LORAPIPE_SCREENSHOTS"]) / path.name)
    return path
