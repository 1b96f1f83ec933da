"""Test workspaces and the helpers tests import: this checkout's root and the environment child
processes get, copies of the checkout or of a shared workspace, git and DVC commands in them, and
the real stage scripts run there the way `dvc repro` does (cwd = a repo root).

Plain functions and constants only; tests/conftest.py holds the fixtures and imports from here."""

from __future__ import annotations

import copy
import csv
import functools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import yaml

from lorapipe.core.artifacts import BASE, EVAL_DETAILS, EVAL_JSON, EVAL_SCORES, PATHS, TRAIN_LOG
from lorapipe.core.metric_files import EVAL_HEADLINE, write_numbers
from tests.stage_server import StageServer, apply_limits, current_limits

ROOT = Path(__file__).resolve().parents[1]
# This worker's stage server (tests/stage_server.py), started by the first stage a test runs or the first DVC
# command that may run one.
STAGE_SERVER = StageServer()
SMOLLM2_GGUF = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
SKY_PYTHON = ROOT / ".venv-sky/bin/python"  # the cloud launcher's venv (make sky)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process (a stage, a module, a script): this checkout's lorapipe on
    PYTHONPATH, since the venv's editable install may point at another checkout; once the stage server runs,
    its `python` stand-in first on PATH; then `extra`."""
    served = STAGE_SERVER.environment(os.environ["PATH"])  # the stages DVC runs: forked from the server
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT), **served, **extra}


# Where git (and DVC, through libgit2) would find an identity, besides a repository's own .git/config.
GIT_IDENTITY_VARIABLES = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def user_machine_env(home: Path, **extra: str) -> dict[str, str]:
    """child_env as on a user's fresh machine (Colab, a container): an empty HOME, no global or system git
    config, so no git identity unless a repository has its own, and nothing that tells a library it runs under
    pytest or in a CI (MLflow, for one, then sends no usage data). .ci/run runs the whole suite like this."""
    home.mkdir(parents=True, exist_ok=True)
    env = child_env(**{"HOME": str(home), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", **extra})
    env = STAGE_SERVER.without(env)  # not the worker's server: own_stage_server starts one in this environment
    for name in (*GIT_IDENTITY_VARIABLES, "XDG_CONFIG_HOME", "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS"):
        if name not in extra:
            env.pop(name, None)
    return env


@contextmanager
def own_stage_server(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env` (a user flow's: user_machine_env) with a stage server of its own, started in it: the stages that DVC
    runs there fork from it, so a flow imports torch, transformers and PEFT once. Stopped on the way out."""
    server = StageServer()
    server.start(env)
    try:
        yield {**env, **server.environment(env["PATH"])}
    finally:
        server.stop()


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


def copy_workspace(source: Path, to: Path) -> Path:
    """A private copy of a shared workspace or repo, to change params or write outputs in. Without MLflow's
    local store: its experiment names the original's absolute artifact folder, so the copy's runs would
    write there; the copy's stages start a store of their own."""
    return Path(shutil.copytree(source, to, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlruns")))


def default_params() -> dict:
    """The real run: every section of params.yaml and settings.yaml as committed (real_run_commit), the one
    home of every default. Not the working copies, which `make demo` rewrites with the offline profile and
    `dvc exp run -S` with an experiment's values. A copy: the caller may change it."""
    return copy.deepcopy(parsed_defaults())


@functools.cache
def parsed_defaults() -> dict:
    """default_params, parsed once per process (ruamel's parse of both files takes ~30 ms)."""
    from lorapipe.core.params import PARAM_FILES, parse_yaml

    return {
        section: values
        for name in PARAM_FILES
        for section, values in parse_yaml(committed_params_text(name), f"{real_run_commit()[:7]}:{name}").items()
    }


@functools.cache
def real_run_commit(repo: Path = ROOT) -> str:
    """The commit whose params files hold the real run: the newest of HEAD's first-parent history that `make
    demo` did not make. So the tests read the same defaults on `main`, on the demo's branch (whose commits
    hold the offline profile and its results) and with any uncommitted edit."""
    from lorapipe.workspace.demo import COMMIT_PREFIX

    log = subprocess.run(
        ["git", "log", "--first-parent", "--format=%H %s", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    )
    return next(
        sha
        for sha, _, subject in (line.partition(" ") for line in log.stdout.splitlines())
        if not subject.startswith(COMMIT_PREFIX)
    )


@functools.cache
def committed_params_text(name: str = "params.yaml") -> str:
    """A params file (params.yaml, settings.yaml) of the real run (real_run_commit), comments and all."""
    shown = subprocess.run(
        ["git", "show", f"{real_run_commit()}:{name}"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return shown.stdout


def write_param_files(ws: Path, params: dict[str, dict[str, Any]]) -> None:
    """Each section of `params` into the file that holds it (params.yaml or settings.yaml), without comments."""
    from lorapipe.core.params import FILE_OF, PARAM_FILES

    for name in PARAM_FILES:
        sections = {section: values for section, values in params.items() if FILE_OF[section] == name}
        (ws / name).write_text(yaml.safe_dump(sections, sort_keys=False))


def update_params(ws: Path, sections: dict[str, dict[str, Any]]) -> None:
    """The params files in `ws` with `sections`' keys set (each in the file that holds it), comments dropped."""
    from lorapipe.core.params import PARAM_FILES

    params = {
        section: values for name in PARAM_FILES for section, values in yaml.safe_load((ws / name).read_text()).items()
    }
    for section, values in sections.items():
        params[section].update(values)
    write_param_files(ws, params)


def sh(repo: Path, *cmd: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`cmd` in `repo`, its output read from files rather than pipes: a daemon it leaves behind (DVC's queue
    worker idles 10 s before it exits) holds no pipe open, so this returns when `cmd` itself ends."""
    if cmd[:2] in (("dvc", "repro"), ("dvc", "exp"), ("dvc", "queue")):  # DVC runs stages: fork them
        STAGE_SERVER.start(child_env())
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        ended = subprocess.run(cmd, cwd=repo, stdout=out, stderr=err, env=env or child_env(), timeout=900)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, ended.returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def ran(output: str) -> list[str]:
    """Stages that `dvc repro`/`dvc exp run` actually ran, from DVC 3's log lines."""
    return re.findall(r"Running stage '(\w+)'", output)


def copy_checkout(repo: Path) -> Path:
    """The working tree's files as a clone has them (git-tracked or not ignored), SmolLM2 under .cache/,
    params.yaml and settings.yaml = the real run's defaults; not yet a git repository."""
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
    from lorapipe.core.params import PARAM_FILES

    for name in PARAM_FILES:  # as committed, comments and all
        (repo / name).write_text(committed_params_text(name))
    return repo


def copy_tree(repo: Path) -> Path:
    """A clone-like copy of the working tree in `repo`, with default params + the offline profile, committed."""
    copy_checkout(repo)
    sh(repo, "git", "init", "-q")
    sh(
        repo, "python", "-m", "lorapipe.workspace.git_identity"
    )  # as make demo and the notebook do: DVC commits experiments
    sh(repo, "python", "-m", "lorapipe.workspace.profiles", "offline")
    commit(repo, "offline profile")
    return repo


def update_profile(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    """The profile at `path` with each section's keys set to `sections`' values, the rest kept."""
    params = yaml.safe_load(path.read_text()) or {}
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def clean_clone(to: Path) -> Path:
    """A fresh clone of this checkout on `main`, its offline profile shortened (QUICK_RUN); this interpreter's
    venv as .venv (make demo's install is done) and llama.cpp's converter where make demo expects them."""
    repo = copy_checkout(to)
    update_profile(repo / "profiles/offline.yaml", QUICK_RUN)
    sh(repo, "git", "init", "-q", "-b", "main")
    commit(repo, "the project, as cloned")  # the fixture's own identity: the flow has none
    (repo / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (repo / ".cache/llama.cpp").symlink_to(ROOT / ".cache/llama.cpp", target_is_directory=True)
    return repo


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def pushed_to_origin(repo: Path, origin: Path, model_dir: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """copy_tree's repo in `repo`, on the model in `model_dir` with `sections` over its params, committed as
    `main` and pushed to `origin`, a new bare repository that plays GitHub."""
    sh(repo.parent, "git", "init", "-q", "--bare", str(origin))
    copy_tree(repo)
    update_params(repo, {**sections, "model": {"name": str(model_dir), "revision": "", "sha256": ""}})
    commit(repo, "quick run on the tiny model")
    sh(repo, "git", "branch", "-M", "main")
    sh(repo, "git", "remote", "add", "origin", str(origin))
    sh(repo, "git", "push", "-q", "origin", "main")
    return repo


# The offline profile, shortened further: a DAG run on SmolLM2 in about a minute. One validation pass, on a
# validation split of about 8 products (2 rows), where the curves need only a point each.
QUICK_RUN = {
    "split": {"val_size": 0.005},
    "tokenize": {"seq_len": 256},  # half the profile's rows: each SmolLM2 step (4 in all, on the flow's chain) halves
    "train": {"max_steps": 2, "micro_batch": 1, "grad_accum": 1, "eval_every": 2},
    "eval": {"max_samples": 4, "batch_size": 4, "max_new_tokens": 12},
}


# What the tests' runs leave off unless their claim is about it: MLflow, whose import and store cost a train or
# evaluate process about 3 of its 10 CPU-seconds on the tiny Llama. The tracking tests turn it back on; the
# README flow and the cloud job keep settings.yaml's default.
UNTRACKED = {"ops": {"mlflow": False}}
TRACKED = {"ops": {"mlflow": True}}  # the tests whose claim is tracking


# The tests' runs on the tiny Llama share one data build (conftest `prepared`): the synthetic sample's first 200
# products in 256-token rows. Each dict below is one purpose's run on top of it.
TINY_DATA = {"sample": {"size": 200}, "tokenize": {"seq_len": 256}}


# `prepared`'s params, and the runs that tests train in a copy of it: 6 short steps, 4 test samples decoded.
STUDY_RUN = {
    **TINY_DATA,
    "train": {
        "max_steps": 6,
        "micro_batch": 2,
        "grad_accum": 1,
        "lr": 0.003,
        "grad_checkpointing": False,
        "eval_every": 3,
    },
    "eval": {"max_samples": 4, "batch_size": 4, "max_new_tokens": 8},
}


# A whole DAG through DVC on the tiny Llama (a repo, the notebook's cells, cloud/job.sh), kept short: 4 training
# steps, a checkpoint every 2 (mirrored where the profile mirrors), 4 test samples decoded.
SHORT_JOB = {
    **TINY_DATA,
    "train": {"max_steps": 4, "micro_batch": 2, "grad_accum": 2, "lr": 0.002, "eval_every": 100},
    "ops": {"save_every": 2, **UNTRACKED["ops"]},
    "eval": STUDY_RUN["eval"],
}


# The shared trained workspace's params (on `prepared`'s data): checkpoints at steps 10, 20 and 30 leave time to
# kill a rerun between two of them (test_training).
TUNED = {
    **TINY_DATA,
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


# A fixed input for comparing two models' logits (token ids of the tiny Llama's vocabulary: BOS ... EOS).
LOGIT_PROBE = [[1, 500, 600, 700, 800, 900, 2]]

# Product titles that tests decode with a model (the export's, the GGUF's), besides the test split's.
TITLES = ["Acme Stainless Steel Travel Mug 16oz", "USB-C Charging Cable 2m", "Kids Rain Boots Size 10", "Oak Desk"]


# Built at run time, so no credential-shaped string sits in a tracked file.
S3_KEY_ID, S3_SECRET = "AKIA" + "TESTONLY" * 2, "fake/secret+key0123456789" + "abcdefABCDEF01"

# Fake secrets a user's environment may hold (built at run time too): the tests set them and scan what was written.
SECRETS = {
    "HF_TOKEN": "hf_" + "FAKEfake" * 4 + "01",
    "AWS_SECRET_ACCESS_KEY": "FAKEsecret" * 3 + "02",
    "MLFLOW_TRACKING_PASSWORD": "FAKEpassword" * 2 + "03",
    "DAGSHUB_TOKEN": "FAKEdagshub" * 2 + "04",
}


def printed_and_written(root: Path, *results: subprocess.CompletedProcess, leave_out: Collection[str] = ()) -> str:
    """What `results` printed and the text of every file under `root` (but those with a path part in `leave_out`):
    where a secret must never be found."""
    files = (p for p in root.rglob("*") if p.is_file() and not set(p.relative_to(root).parts) & set(leave_out))
    return "".join(r.stdout + r.stderr for r in results) + "".join(p.read_bytes().decode("latin-1") for p in files)


def use_remote(repo: Path, endpoint: str) -> None:
    """The S3 server at `endpoint` as `repo`'s default DVC remote, set up as users do (scripts/remote.py)."""
    env = child_env(AWS_ACCESS_KEY_ID=S3_KEY_ID, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    command = [sys.executable, str(ROOT / "scripts/remote.py"), "--endpoint", endpoint, "--default"]
    subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)


def mirrored_steps(endpoint: str) -> dict[str, int]:
    """Each run's newest mirrored step in the remote's bucket, by its LATEST key. The session's tests share
    the bucket (and a run of the same inputs shares its key): a test compares with what was there before."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
    listed = s3.list_objects_v2(Bucket="dvc", Prefix="lorapipe/checkpoints/").get("Contents", [])
    keys = [o["Key"] for o in listed if o["Key"].endswith("/LATEST")]
    return {key: int(s3.get_object(Bucket="dvc", Key=key)["Body"].read()[5:]) for key in keys}


T = TypeVar("T")


def write_params(ws: Path, **sections: dict[str, Any]) -> None:
    """params.yaml and settings.yaml = the real run's defaults + the offline profile + UNTRACKED + `sections`."""
    params = default_params()
    for overrides in (yaml.safe_load((ROOT / "profiles/offline.yaml").read_text()), UNTRACKED, sections):
        for section, values in overrides.items():
            params[section].update(values)
    write_param_files(ws, params)


def stage(
    ws: Path,
    script: str,
    *args: str,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    limits: dict[str, int] | None = None,
) -> subprocess.CompletedProcess:
    """stages/`script` with `args` in `ws`, as its own process: forked from this worker's stage server, or a
    fresh interpreter where `env` changes what the server's libraries read at import. `limits`: resource limits
    by name (`{"RLIMIT_FSIZE": bytes}`), soft and hard."""
    path, full_env, limits = str(ROOT / "stages" / script), child_env(**(env or {})), limits or {}
    STAGE_SERVER.start(child_env())
    result = STAGE_SERVER.run(path, args, ws, full_env, timeout, limits)
    if result is None:
        result = subprocess.run(
            [sys.executable, path, *args],
            cwd=ws,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            preexec_fn=functools.partial(apply_limits, current_limits(**limits)) if limits else None,
        )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stderr[-3000:]}")
    return result


def data_workspace(ws: Path, model_dir: Path, **sections: dict[str, Any]) -> Path:
    """A workspace with data/split and data/tokenized built from the synthetic sample."""
    (ws / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "data/synthetic/trn.json.gz", ws / "data/trn.json.gz")
    shutil.copytree(model_dir, ws / BASE)
    write_params(ws, **{"data": {"url": "data/trn.json.gz"}, **sections})
    for name in ("download", "clean", "sample", "split", "tokenize"):
        stage(ws, script_of(name), *stage_args(name))
    return ws


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1, no traceback, exactly one `error:` line holding every fragment."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def free_port() -> int:
    """A loopback port nobody listens on (for servers to start, or for refused connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_training(ws: Path, metrics: Path, checkpoints: Path, **env: str) -> subprocess.Popen:
    """The train stage in the background (to be signalled), on the workspace's data and base model."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "stages/train.py"),
            *stage_args("train", metrics),
            "--checkpoints",
            str(checkpoints),
        ],
        cwd=ws,
        env=child_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(
    ready: str | Callable[[], object], timeout: float, proc: subprocess.Popen | None = None, every: float = 0.05
) -> None:
    """Return once `ready` holds: a predicate returns something true, or a URL answers 200. Fail if `proc`
    (the process that brings it about) ends first, showing what it printed, or if `timeout` seconds pass
    (then `proc` is killed: a test that failed leaves nothing running)."""
    check = ready if callable(ready) else lambda: answers(ready)
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            printed = [p.read() for p in (proc.stdout, proc.stderr) if p is not None]
            text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x for x in printed)[-3000:]
            raise AssertionError(f"{proc.args[:3]} ended ({proc.returncode}) before {ready} was ready:\n{text}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
                proc.wait()
            raise AssertionError(f"{ready} not ready after {timeout} s")
        time.sleep(every)


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused while the server starts, or an HTTP error
        return False


def train_losses(metrics: Path) -> list[float]:
    with open(metrics / TRAIN_LOG.name) as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@functools.cache
def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them (`${paths.NAME}` filled in): what `dvc repro` runs."""
    from dvc.dvcfile import load_file
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return load_file(repo, str(ROOT / "dvc.yaml")).resolver.resolve()["stages"]


def script_of(name: str) -> str:
    """The script of dvc.yaml's stage `name`, relative to stages/."""
    return dvc_stages()[name]["cmd"].split()[1].removeprefix("stages/")


def stage_args(name: str, metrics: str | Path = "metrics", **paths: str | Path) -> tuple[str, ...]:
    """The arguments `dvc repro` passes to dvc.yaml's stage `name`. For side runs: `metrics` moves its
    metrics/ files to another folder, `paths` replace named paths of dvc.yaml (trained="side/trained")."""
    swap = {PATHS[key].as_posix(): str(value) for key, value in paths.items()}
    args = dvc_stages()[name]["cmd"].split()[2:]
    return tuple(
        swap.get(arg, f"{metrics}/{Path(arg).name}" if Path(arg).parent == Path("metrics") else arg) for arg in args
    )


def params_of(cls: type[T], **overrides: Any) -> T:
    """`cls`'s section of its committed file (where every default lives), with `overrides`, validated."""
    from lorapipe.core.params import FILE_OF, SECTION_OF, parse_section

    section = SECTION_OF[cls]
    return parse_section(
        cls, {**default_params()[section], **overrides}, source=f"{real_run_commit()[:7]}:{FILE_OF[section]}"
    )


def queue_status(repo) -> dict[str, str]:
    """experiment name -> Queued/Running/Success/Failed, from `dvc queue status`."""
    rows = [line.split() for line in sh(repo, "dvc", "queue", "status").stdout.splitlines()]
    states = {"Queued", "Running", "Success", "Failed"}
    return {row[1]: row[-1] for row in rows if len(row) >= 4 and row[-1] in states}


# The tests that compare with the real run's defaults: the README flow runs them in its clone after `make demo`,
# on the demo's branch whose commit holds the offline profile (the README's second command after the first).
DEFAULT_CHECKS = (
    "python -m pytest -q -p no:cacheprovider -m 'not slow and not heavy' "
    "tests/test_params.py tests/test_publish.py tests/test_training.py"
)
# The README's next steps that the flow (conftest `readme_flow`) leaves out, and why.
README_SKIPS = {
    "source .venv/bin/activate": "the venv's bin/ is on the flow's PATH already",
    "python app.py": "a server that runs until stopped: tests/test_app.py drives it in a browser",
}


def readme_commands(heading: str, readme: Path = ROOT / "README.md") -> list[str]:
    """The shell commands of the ```bash blocks in `readme`'s section `## heading`: comments and blank lines
    left out, one command a line."""
    section = readme.read_text().split(f"\n## {heading}\n")[1].split("\n## ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = (line.split(" #")[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def exp_run_sweep(command: str) -> list[dict[str, list[str]]]:
    """The experiments a `dvc exp run` command makes, by DVC's own argument parser and its hydra sweep
    expansion (one dict of params-file overrides each). A key set twice fails: DVC keeps the last value,
    so `-S lora.r=4 -S lora.r=32` is one experiment (r=32), not the sweep it reads as."""
    from dvc.cli import parse_args
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps, to_hydra_overrides

    argv = shlex.split(command)
    assert argv[:3] == ["dvc", "exp", "run"], command
    overrides = to_path_overrides(parse_args(argv[1:]).set_param or [])
    for path, values in overrides.items():
        keys = [override.key_or_group for override in to_hydra_overrides(values)]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        assert not twice, f"{command}: sets {', '.join(twice)} more than once, and DVC keeps only the last ({path})"
    return get_hydra_sweeps(overrides)


# Shared by several test modules: the notebook's commands, the S3 remote, report fixtures, titles.
NOTEBOOK = ROOT / "notebooks/colab.ipynb"
COLAB_FREEZE = ROOT / "tests/data/colab-2026.08-pip-freeze-gpu.txt"  # its first lines say where it is from


def shell_commands(skip_templated: bool = True) -> list[str]:
    """The notebook's `!` commands; those holding a {PARAM} are skipped unless asked for."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    lines = [line.strip() for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return [line[1:] for line in lines if line.startswith("!") and not (skip_templated and "{" in line)]


# Model text and data that would be live in a PR comment or a page: a mention, references, links, math, HTML, an
# autolinked GH id, right-to-left overrides. Reports and pages must show it inert.
HOSTILE = (
    "@octocat see #1 and org/repo#2 at http://evil.example/x or www.evil.example, mail a@b.example, $x^2$ <b>, "
    "GH-123 gh-7, \u202ecod.exe\u2066 \u200f"
)
BIDI_CONTROL = "[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"


def commit_metrics(repo: Path, rouge_l: float, r: int, message: str) -> None:
    """A commit with the evaluate stage's record and params, and no per-sample scores (as before they existed)."""
    scores = {"bleu": 1.0, "rouge1": 0.3, "rouge2": 0.1, "rougeL": rouge_l, "perplexity": 9.0}
    result = {"base": {**scores, "rougeL": 0.2}, "tuned": scores, "samples": 4}
    result["delta"] = {name: scores[name] - result["base"][name] for name in scores}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / EVAL_SCORES).unlink(missing_ok=True)
    write_numbers(repo / EVAL_JSON, repo / EVAL_DETAILS, result, EVAL_HEADLINE)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["lora"]["r"] = r
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--allow-empty", "-qm", message)


def score_rows(ids: range, shift: float, tuned_text: str = "a fine mug") -> list[dict]:
    """EVAL_SCORES rows: the tuned model `shift` above the base in ROUGE-L, with noise."""
    rng = np.random.default_rng(0)
    rows = []
    for i in ids:
        base = {"text": "hmm", "rouge1": 0.3, "rouge2": 0.1, "rougeL": float(rng.uniform(0.1, 0.5)), "bleu": 5.0}
        base |= {"bleu_stats": [20, 25, 10, 5, 2, 1, 20, 19, 18, 17], "loss": 2.0, "tokens": 30}
        tuned = {**base, "text": tuned_text, "rougeL": base["rougeL"] + shift + float(rng.normal(0, 0.05))}
        rows.append({"id": f"s{i:04d}", "title": f"Mug {i}", "reference": "A mug.", "base": base, "tuned": tuned})
    return rows


def commit_scores(repo: Path, rows: list[dict], message: str) -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / EVAL_SCORES).write_text("".join(json.dumps(r) + "\n" for r in rows))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--allow-empty", "-qm", message)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first markdown table in `text`, each as its stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


# What a secret scan flags in a tracked file: AWS keys, HF and GitHub tokens, a secret-named key with a value.
CREDENTIAL = re.compile(
    r"(AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{30,}|ghp_[A-Za-z0-9]{30,}|"
    r"(secret_access_key|password|token)\s*[:=]\s*[\"']?[A-Za-z0-9/+]{16,})"
)
