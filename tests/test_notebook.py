"""The Colab notebook: valid, runs the commands docs/colab.md documents, logs in with the DagsHub client,
installs what resolves on Colab's own package versions, and runs every cell twice in one runtime to a
pull-request branch that holds the real run, which a new machine pulls and runs none of again."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorapipe.workspace.outbound import RESULTS
from tests.http_server import serve_dagshub
from tests.workspace import (
    COLAB_FREEZE,
    NOTEBOOK,
    ROOT,
    S3_KEY_ID,
    S3_SECRET,
    SHORT_JOB,
    child_env,
    own_stage_server,
    pushed_to_origin,
    ran,
    sh,
    shell_commands,
    use_remote,
    user_machine_env,
)


def test_notebook_is_valid_nbformat_4():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["accelerator"] == "GPU"
    for cell in nb["cells"]:
        assert cell["cell_type"] in {"code", "markdown"} and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None  # committed clean


def test_notebook_commands_match_the_docs():
    readme = ROOT.joinpath("docs/colab.md").read_text()
    commands = shell_commands()
    assert {"python scripts/remote.py --default", "python -m lorapipe.workspace.profiles colab"} <= set(commands)
    templated = shell_commands(skip_templated=False)
    assert (
        "bash scripts/repro_and_push.sh {BRANCH}" in templated and "bash scripts/push_results.sh {BRANCH}" in templated
    )
    assert "pip install -q -r requirements.txt -c constraints-colab.txt" in commands  # Colab keeps its torch/numpy
    for command in commands:
        assert f"\n{command}\n" in readme, f"docs/colab.md lacks `{command}`"


def test_notebook_reads_credentials_from_colab_secrets_only():
    text = NOTEBOOK.read_text()
    assert "userdata.get" in text
    for name in ("DAGSHUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "GITHUB_TOKEN"):
        assert f'"{name}"] = "' not in text  # never a literal value


def test_notebook_gives_a_fresh_vm_a_git_identity_before_dvc_commits(repo, tmp_path):
    """Colab's VM has no git identity: the notebook's own command gives the repo one before its
    `dvc exp run`, which can then commit the experiment, queued here (libgit2's path, which needs one)."""
    commands = shell_commands(skip_templated=False)
    identity = "python -m lorapipe.workspace.git_identity"
    [experiment] = [c for c in commands if c.startswith("dvc exp run")]
    assert commands.index(identity) < commands.index(experiment)
    assert commands.index(identity) < commands.index("python scripts/remote.py --default")  # before any commit
    experiment = experiment.format(name="colab", set_args="-S lora.r=8").replace("--temp", "").replace("-n colab", "")
    for key in ("user.name", "user.email"):  # copy_tree's own call set one under .ci/run
        sh(repo, "git", "config", "--local", "--unset-all", key, check=False)
    env = user_machine_env(tmp_path / "home")
    sh(repo, *identity.split(), env=env)
    sh(repo, "python", "-m", "lorapipe.workspace.profiles", "colab", env=env)  # the notebook's edit, committed later
    sh(repo, *experiment.split(), "--queue", "-n", "colab", env=env)  # the notebook's, queued
    assert "colab" in sh(repo, "dvc", "queue", "status", env=env).stdout
    sh(repo, "dvc", "queue", "remove", "--all", env=env)


def credentials_cell() -> str:
    """The code cell that reads the Colab secrets, as a Python program: its `!` lines run in a shell, as on Colab."""
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    source = next("".join(c["source"]) for c in cells if "userdata.get" in "".join(c["source"]))
    lines = source.splitlines()
    return "\n".join(f"subprocess.run({s[1:]!r}, shell=True, check=True)" if s.startswith("!") else s for s in lines)


def test_notebook_logs_in_with_the_dagshub_client(repo, mlflow_server, s3_endpoint, tmp_path):
    """The credentials cell as Colab runs it, on a fresh machine, with DagsHub played on 127.0.0.1 (the client's
    DAGSHUB_CLIENT_HOST): the dagshub client checks the token, a stage's MLflow run lands on the repo's MLflow
    as the token's user, and `dvc push` reaches the repo's S3 endpoint with the token kept out of tracked files."""
    from mlflow.tracking import MlflowClient

    token = "dagshub-app-" + "t0ken" * 6
    secrets = {"DAGSHUB_USER": "me", "DAGSHUB_REPO": "lorapipe", "DAGSHUB_TOKEN": token, "GITHUB_TOKEN": "unused"}
    colab = f"import subprocess, sys, types\nsecrets = {secrets!r}\n"
    colab += "sys.modules['google.colab'] = types.SimpleNamespace(userdata=types.SimpleNamespace(get=secrets.get))\n"
    after = "\nfrom lorapipe.train.tracking import Tracker\ntracker = Tracker('colab-login')\n"
    after += "tracker.log_metrics({'colab_login': 1.0})\ntracker.finish()\nprint('run', tracker.mlflow_run_id)\n"
    routes = {"/me/lorapipe.mlflow": mlflow_server, "/me/lorapipe.s3": s3_endpoint}
    with serve_dagshub("me", token, routes) as dagshub:
        env = user_machine_env(tmp_path / "home", DAGSHUB_CLIENT_HOST=dagshub.url)
        program = colab + credentials_cell() + after
        cell = subprocess.run([sys.executable, "-c", program], cwd=repo, env=env, capture_output=True, text=True)
        assert cell.returncode == 0, cell.stderr[-3000:]
        (repo / "probe.txt").write_text("pushed through the S3 endpoint\n")
        sh(repo, "dvc", "add", "-q", "probe.txt", env=env)
        pushed = sh(repo, "dvc", "push", "probe.txt", env=env)
    assert ("GET", "/api/v1/user") in dagshub.requests  # the client's token check
    run_id = cell.stdout.split("run ")[-1].strip()
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.data.metrics["colab_login"] == 1.0 and run.info.status == "FINISHED"
    assert any(path.startswith("/me/lorapipe.s3/dvc/") for method, path in dagshub.requests if method == "PUT")
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
    assert s3.list_objects_v2(Bucket="dvc").get("KeyCount", 0) >= 1
    assert f"{dagshub.url}/me/lorapipe.s3" in (repo / ".dvc/config").read_text()
    assert token not in (repo / ".dvc/config").read_text() and token in (repo / ".dvc/config.local").read_text()
    assert token not in cell.stdout + cell.stderr + pushed.stdout + pushed.stderr


def colab_constraints_script():
    """scripts/colab_constraints.py as a module: what Colab keeps (KEEP, kept) and how its file is written."""
    spec = importlib.util.spec_from_file_location("colab_constraints", ROOT / "scripts/colab_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pip_installs() -> list[list[str]]:
    """The arguments of each of the notebook's `pip install` commands."""
    return [shlex.split(c)[2:] for c in shell_commands(skip_templated=False) if c.startswith("pip install")]


def test_the_notebooks_install_resolves_on_colabs_packages_keeping_its_torch_numpy_pandas_and_pyarrow(tmp_path):
    """Every `pip install` of the notebook, resolved by uv for Colab's GPU runtime 2026.08 (Python 3.13, x86_64
    manylinux, wheels only but for two pure-Python sdists) with Colab's versions of what it keeps as constraints
    (tests/data: its published pip freeze): it resolves, keeps Colab's torch, numpy, pandas and pyarrow, and
    gives everything else constraints-colab.txt's tested versions. Needs the package index (PyPI), which these
    machines and CI reach. Colab's CUDA libraries are left out of the constraints: PyPI's torch 2.11.0 wheel
    asks for CUDA 13 ones, Colab's cu128 build brings its own."""
    script = colab_constraints_script()
    generated = subprocess.run(
        [sys.executable, "scripts/colab_constraints.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert generated.stdout == (ROOT / "constraints-colab.txt").read_text(), "constraints-colab.txt is stale: make lock"
    colab = {}
    for line in COLAB_FREEZE.read_text().splitlines():
        name, _, version = line.partition("==")
        if version and script.kept(script.package_name(name)) and not re.match(r"(nvidia-|cuda-|triton)", name):
            colab[script.package_name(name)] = version.split("+")[0]  # torch 2.11.0+cu128 is PyPI's 2.11.0
    (tmp_path / "colab-keeps.txt").write_text("".join(f"{n}=={v}\n" for n, v in colab.items()))
    inputs, constraints, specs = [], [str(tmp_path / "colab-keeps.txt")], []
    for args in pip_installs():
        words = iter(args)
        for word in words:
            if word in ("-r", "-c"):
                (inputs if word == "-r" else constraints).append(next(words))
            elif word == "-e":
                next(words)  # the project itself: requirements.txt installs it with its extra
            elif not word.startswith("-"):
                specs.append(word)
    assert inputs == ["requirements.txt"] and "constraints-colab.txt" in constraints
    (tmp_path / "more.in").write_text("".join(f"{spec}\n" for spec in specs))
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    command = [uv, "pip", "compile", *inputs, str(tmp_path / "more.in"), *(f"--constraint={c}" for c in constraints)]
    command += ["--python-version", "3.13", "--python-platform", "x86_64-manylinux_2_28", "--only-binary", ":all:"]
    command += ["--no-binary", "rouge-score", "--no-binary", "antlr4-python3-runtime"]  # pure Python, sdist only
    command += ["--no-header", "--no-annotate", "--quiet", "-o", str(tmp_path / "resolved.txt")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = dict(
        (script.package_name(name), version)
        for name, _, version in (line.partition("==") for line in (tmp_path / "resolved.txt").read_text().splitlines())
        if version
    )
    for name in ("torch", "numpy", "pandas", "pyarrow"):
        assert resolved[name] == colab[name], name
    assert all(resolved[name] == version for name, version in colab.items() if name in resolved)
    tested = dict(
        line.split("==") for line in (ROOT / "constraints-colab.txt").read_text().splitlines() if "==" in line
    )
    pinned = {script.package_name(name): version for name, version in tested.items()}
    assert all(resolved[name] == pinned[name] for name in resolved if name in pinned)
    assert {"transformers", "peft", "dvc", "mlflow", "bitsandbytes"} <= resolved.keys() & pinned.keys()


@pytest.mark.slow
def test_every_cell_runs_twice_to_a_pull_request_branch_that_a_new_machine_runs_none_of_again(
    tmp_path, tiny_model_dir, s3_endpoint
):
    """All cells twice in one runtime (the folder it started in, the clone, `%cd`), with the experiment cell on:
    each stage reaches origin and the remote as it finishes, the branch a pull request is opened from holds the
    real run (lora.r 16) as its tip, the experiment (lora.r=8) is on origin as an experiment of that tip, and the
    second pass changes neither. Then another machine: a clone of the branch pulls every output, reports, a
    teammate fetches the model by its release tag, and the notebook's script there runs no stage again. On a
    stand-in runtime (tests/colab_runtime.py) with a local bare origin as GitHub and moto as DagsHub's S3: the
    cell that reads Colab's secrets is played by one that points the same variables at them, and `pip` only
    records what it was asked (the resolution test above resolves it)."""
    origin = tmp_path / "origin.git"
    pushed_to_origin(tmp_path / "laptop", origin, tiny_model_dir, SHORT_JOB)
    sh(origin, "git", "symbolic-ref", "HEAD", "refs/heads/main")  # GitHub's default branch: what a clone checks out
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/pip").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "pip.log"}\n')
    (tmp_path / "bin/pip").chmod(0o755)
    credentials = (
        "import os\n"
        f"os.environ.update(AWS_ACCESS_KEY_ID={S3_KEY_ID!r}, AWS_SECRET_ACCESS_KEY={S3_SECRET!r}, GITHUB_TOKEN='x')\n"
        f"!python scripts/remote.py --default --endpoint {s3_endpoint}\n"
    )
    settings = {
        "passes": 2,
        "forms": {"REPO_URL": str(origin), "RUN_EXPERIMENT": True},
        "stand_ins": {"userdata": credentials},
    }
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    content = tmp_path / "content"  # where the runtime starts, as Colab's /content
    content.mkdir()
    env = user_machine_env(tmp_path / "home", PATH=f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin")
    with own_stage_server(env) as env:
        result = subprocess.run(
            [sys.executable, "-m", "tests.colab_runtime", str(NOTEBOOK), str(tmp_path / "settings.json")],
            cwd=content,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=1500,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    first, second = output.split("=== pass 2, code cell 1")
    assert "results go to results/colab, a new branch" in first and "going on from origin/results/colab" in second
    assert "lora.r=8: already run on this commit" in second and "Running stage" not in second
    ends = re.findall(r"=== pass \d ended at (\w+)", output)
    tip = sh(origin, "git", "rev-parse", "results/colab").stdout.strip()
    assert ends == [tip, tip]  # the second pass added no commit

    def on_branch(path: str) -> str:
        return sh(origin, "git", "show", f"results/colab:{path}").stdout

    assert yaml.safe_load(on_branch("params.yaml"))["lora"]["r"] == 16  # the real run, not the experiment
    assert yaml.safe_load(on_branch("settings.yaml"))["ops"]["checkpoint_mirror"] == "remote"  # the colab profile's
    assert json.loads(on_branch("metrics/eval.json")) and "evaluate" in yaml.safe_load(on_branch("dvc.lock"))["stages"]
    experiments = sh(origin, "git", "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    assert experiments == [f"refs/exps/{tip[:2]}/{tip[2:]}/lora.r=8"]  # based on the branch's tip
    assert yaml.safe_load(sh(origin, "git", "show", f"{experiments[0]}:params.yaml").stdout)["lora"]["r"] == 8
    installs = (tmp_path / "pip.log").read_text().splitlines()
    assert installs == [" ".join(["install", *args]) for args in pip_installs()] * 2
    assert sh(content / "lorapipe", "git", "status", "--porcelain", *RESULTS).stdout == ""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    pushes = [first.count("pushed results/colab to origin"), second.count("pushed results/colab to origin")]
    assert pushes == [len(stages) + 1, 2]  # after every stage, or once when none ran; then the last cell

    # Another machine: a fresh clone of the branch gets data and models from the remote.
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", "-b", "results/colab", str(origin), str(clone))
    use_remote(clone, s3_endpoint)
    sh(clone, "dvc", "pull", "-q")
    assert (clone / "models/trained/adapter_model.safetensors").is_file()
    assert "up to date" in sh(clone, "dvc", "status", "dvc.yaml").stdout
    tuned = json.loads((clone / "metrics/eval.json").read_text())["tuned"]["rougeL"]
    sh(clone, sys.executable, "-m", "lorapipe.reporting.report", "--base", "origin/main", "-o", "report.md")
    assert f"{tuned:.4g}"[:5] in (clone / "report.md").read_text()

    # The model is released as version 0.1.0 of the artifacts (annotated `name@vX.Y.Z` tags, which is how
    # `dvc artifacts get` finds a version); a teammate fetches it by name into a folder that is no repository,
    # and the app loads it: the tuned text evaluate wrote for the first test sample.
    for name in ("trained", "base"):
        sh(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", f"{name}@v0.1.0", "-m", "release")
        sh(clone, "git", "push", "-q", "origin", f"{name}@v0.1.0")
    teammate = tmp_path / "teammate"
    teammate.mkdir()
    config = tmp_path / "dagshub.config"  # the remote, as the teammate's docs spell it (origin's default is local)
    remote_section = f"['remote \"dagshub\"']\n    url = s3://dvc\n    endpointurl = {s3_endpoint}\n"
    config.write_text("[core]\n    remote = dagshub\n" + remote_section)
    remote = ["--config", str(config)]
    fetch_env = child_env(AWS_ACCESS_KEY_ID=S3_KEY_ID, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    for name in ("trained", "base"):
        sh(teammate, "dvc", "artifacts", "get", str(origin), name, "-o", f"models/{name}", *remote, env=fetch_env)
    assert_same_files(teammate / "models/trained", clone / "models/trained")
    from app import Describer
    from lorapipe.core.params import EvalParams, TokenizeParams, load_params

    describer = Describer(teammate / "models", load_params(TokenizeParams, clone).prompt_tokens)
    sample = json.loads((clone / "metrics/eval_samples.jsonl").read_text().splitlines()[0])
    assert describer.describe(sample["title"], load_params(EvalParams, clone))[1] == sample["tuned"]

    # The VM is lost: on a new one, the notebook's script on the branch runs no finished stage again.
    again = sh(clone, "bash", "scripts/repro_and_push.sh", "results/colab")
    assert ran(again.stdout) == [] and again.stdout.count("pushed results/colab to origin") == 1
    assert json.loads((clone / "metrics/eval.json").read_text())["tuned"]["rougeL"] == tuned


def assert_same_files(got: Path, want: Path) -> None:
    files = sorted(p.relative_to(want) for p in want.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file())
    assert all((got / f).read_bytes() == (want / f).read_bytes() for f in files)
