"""Shared fixtures: SmolLM2's GGUF, TinyLlama's (LLaMA's) tokenizer, a tiny random Llama with SmolLM2's
tokenizer, the shared (read-only) trained workspace and repo, an S3 server, a browser. Only fixtures and
hooks live here; what tests import (ROOT, child_env, sh, ...) is in tests/workspace.py."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from lorapipe.core.artifacts import EVAL_SCORES
from lorapipe.core.params import PARAM_FILES
from lorapipe.reporting.browser import chromium, has_chromium
from tests.http_server import RecordingProxy, running
from tests.workspace import (
    DEFAULT_CHECKS,
    README_SKIPS,
    ROOT,
    S3_KEY_ID,
    S3_SECRET,
    SHORT_JOB,
    SKY_PYTHON,
    SMOLLM2_GGUF,
    STUDY_RUN,
    TUNED,
    built_once,
    clean_clone,
    commit,
    copy_tree,
    copy_workspace,
    data_workspace,
    free_port,
    kept_read_only,
    own_stage_server,
    queue_status,
    readme_commands,
    sh,
    stage,
    stage_args,
    update_params,
    user_machine_env,
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
    "readme_flow",
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
    # `-n 2 --dist worksteal` hands each worker a contiguous half of the items, and a worker that runs out takes
    # the back of the other's. The README flow takes minutes to build: its tests open the first half; the other
    # slow tests (minutes each), then the heavy ones, open the second, so both workers start on long work; the
    # quick tests close both halves, so what is taken last, which decides when the run ends, takes seconds (not
    # the cloud job's two minutes, which a shuffled order once left for the end). pytest-randomly has shuffled
    # the items already, the same way in every worker; each group keeps that order.
    readme, long, quick = [], [], []
    for item in items:
        if "readme_flow" in getattr(item, "fixturenames", ()):
            readme.append(item)
        elif item.get_closest_marker("heavy") or item.get_closest_marker("slow"):
            long.append(item)
        else:
            quick.append(item)
    long.sort(key=lambda item: not item.get_closest_marker("slow"))  # the notebook's and the cloud job's first
    first_half = max(0, len(items) // 2 - len(readme))
    items[:] = readme + quick[:first_half] + long + quick[first_half:]


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


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory, pristine_repo, tiny_model_dir) -> Iterator[Path]:
    """The pristine repo on the tiny Llama (SHORT_JOB), after a whole `dvc repro`, committed: what a clone holds
    after its first run, DVC's cache and run-cache included. Read-only: `tiny_repo_copy` to run DVC in."""

    def build(repo: Path) -> None:
        repo.rmdir()
        copy_workspace(pristine_repo, repo)
        model = {"name": str(tiny_model_dir), "revision": "", "sha256": ""}
        update_params(repo, {**SHORT_JOB, "model": model})
        sh(repo, "dvc", "repro")
        commit(repo, "the first run, on the tiny Llama")

    with kept_read_only(built_once(tmp_path_factory, "tiny-repo", build)[0]) as repo:
        yield repo


@pytest.fixture
def tiny_repo_copy(tiny_repo, tmp_path) -> Path:
    """This test's own copy of tiny_repo (git, DVC's cache, run-cache and outputs)."""
    return copy_workspace(tiny_repo, tmp_path / "tiny-repo")


@dataclass(frozen=True)
class ReadmeFlow:
    """The README's main flow on SmolLM2, on a machine set up like a user's (a fresh clone, no git identity, an
    empty HOME, no pytest or CI marker; every request beyond 127.0.0.1 goes to a proxy that records it and answers
    none; the offline profile shortened by QUICK_RUN): `make demo`, the tests that read the real run's
    defaults (DEFAULT_CHECKS, on the demo's branch), `make demo` again, the README's next steps as written (the
    lora.r=8 experiment, `dvc exp show`, the PR report against `demo`, the results page, the queued lora.r=4 and
    32 sweep), the report of the lora.r=4 run by its name, then `dvc exp apply` of it and the export. The one
    SmolLM2 repo of the tests: the report, results page, app, publish and GGUF tests read it."""

    repo: Path
    printed: dict[str, str]  # each command -> what it printed (stdout and stderr)
    status: dict[str, str]  # after each command -> what `dvc status` printed
    experiments: dict[str, str]  # lora.r -> the name of its experiment (8, 4, 32)
    outside: list[str]  # every request the flow made beyond this machine (through a recording proxy)


@pytest.fixture(scope="session")
def readme_flow(tmp_path_factory, smollm2_gguf, llama_cpp_converter) -> ReadmeFlow:
    from lorapipe.core.artifacts import EXPORT_COMMAND

    def build(root: Path) -> list:
        with running(RecordingProxy()) as proxy:
            return [*flow(root, proxy.environment()), proxy.requests]

    def flow(root: Path, proxy: dict[str, str]) -> list[dict[str, str]]:
        repo = clean_clone(root / "lorapipe")
        env = user_machine_env(root / "home", PATH=f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin", **proxy)
        printed: dict[str, str] = {}
        status: dict[str, str] = {}

        def run(command: str, key: str = "", status_after: bool = True) -> str:
            """`command` in a shell; its output, stderr merged (in order, as a terminal shows it) but for a CSV."""
            merged = "" if "--csv" in command else " 2>&1"
            printed[key or command] = sh(repo, "bash", "-c", command + merged, env=env).stdout
            if status_after:
                status[key or command] = sh(repo, "dvc", "status", env=env).stdout
            return printed[key or command]

        run("make -n demo", status_after=False)
        run("make demo")
        for command in ("git branch --show-current", "git status --porcelain --untracked-files=no"):
            run(command, status_after=False)
        run(f"git ls-files dvc.lock {EVAL_SCORES}", "git ls-files", status_after=False)
        checks = sh(repo, "bash", "-c", f"{DEFAULT_CHECKS} 2>&1; echo exit $?", env={**env, "PYTHONPATH": str(repo)})
        printed[DEFAULT_CHECKS] = checks.stdout
        run("make demo", "make demo, again", status_after=False)  # idempotent: nothing re-run or committed
        run("git rev-list --count HEAD", status_after=False)
        # The next steps fork their stages from a server of the flow's own, in its environment (`make demo` above ran
        # each stage in a fresh interpreter): `run` reads `env`, now the server's.
        with own_stage_server(env) as env:
            for command in readme_commands("Next steps"):
                if command not in README_SKIPS:
                    run(command)

            def swept() -> bool:
                states = queue_status(repo)
                assert "Failed" not in states.values(), sh(repo, "dvc", "queue", "status", check=False).stdout
                return len(states) == 2 and set(states.values()) == {"Success"}

            wait_for(swept, timeout=1200, every=10)  # each look is a `dvc queue status`; the sweep takes minutes
            shown = run("dvc exp show --only-changed --csv", "the queued sweep")
            rows = csv.DictReader(shown.splitlines())
            experiments = {row["lora.r"]: row["Experiment"] for row in rows if row["typ"].startswith("branch")}
            # The sweep's lora.r=4 run reported by its name while it is in DVC's refs only, then taken into the
            # workspace and exported (outside DVC)
            report = f"python -m lorapipe.reporting.report --run {experiments['4']} --base demo -o r4.md"
            run(report, "the queued run's report", status_after=False)
            run(f"dvc exp apply {experiments['4']}", "dvc exp apply")
            run(f"python {' '.join(EXPORT_COMMAND.split()[1:])}", "the export")
            return [printed, status, experiments]

    repo, (printed, status, experiments, outside) = built_once(tmp_path_factory, "readme-flow", build)
    return ReadmeFlow(repo / "lorapipe", printed, status, experiments, outside)


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
    """The tiny Llama's data built by the real stages and its base outputs decoded (STUDY_RUN), as `dvc exp run`
    leaves them for every experiment of a study: the one data build of the tests that run stages directly.
    Read-only: `prepared_copy` to train or change params in."""

    def build(ws: Path) -> None:
        data_workspace(ws, tiny_model_dir, **STUDY_RUN)
        stage(ws, "generate_base.py", *stage_args("generate_base"))

    with kept_read_only(built_once(tmp_path_factory, "prepared", build)[0]) as ws:
        yield ws


@pytest.fixture
def prepared_copy(prepared, tmp_path) -> Path:
    """This test's own copy of prepared, to train, evaluate or change params in."""
    return copy_workspace(prepared, tmp_path / "prepared")


@pytest.fixture(scope="session")
def tuned_workspace(tmp_path_factory, prepared) -> Iterator[Path]:
    """prepared, then the train stage's nf4 LoRA adapter on the tiny Llama, trained once (models/trained,
    models/checkpoints, metrics/). Shared by many tests, so read-only: `tuned_copy` to change it."""

    def build(ws: Path) -> None:
        ws.rmdir()
        copy_workspace(prepared, ws)
        write_params(ws, data={"url": "data/trn.json.gz"}, **TUNED)
        stage(ws, "train.py", *stage_args("train"))

    with kept_read_only(built_once(tmp_path_factory, "tuned", build)[0]) as ws:
        yield ws


@pytest.fixture
def tuned_copy(tuned_workspace, tmp_path) -> Path:
    """This test's own copy of tuned_workspace, to change params, train or export in."""
    return copy_workspace(tuned_workspace, tmp_path / "tuned")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tuned_workspace, llama_cpp_converter) -> Iterator[Path]:
    """A copy of tuned_workspace after the export stage: models/merged in fp32 (so it decodes exactly as the
    adapter does), models/gguf in f16 and q8_0, the decoding record of eval.max_new_tokens 16; read-only."""

    def build(ws: Path) -> None:
        ws.rmdir()
        copy_workspace(tuned_workspace, ws)
        write_params(ws, export={"dtype": "fp32", "gguf_types": ["f16", "q8_0"]}, eval={"max_new_tokens": 16})
        stage(ws, "export.py")  # the defaults: the workspace's models

    with kept_read_only(built_once(tmp_path_factory, "exported", build)[0]) as ws:
        yield ws


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
    # No job runner: it starts eight job-queue consumers (MLflow's GenAI jobs), each importing MLflow, which the
    # runs' tracking never uses. A log file, not a pipe: nobody reads the server's output while it runs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
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
