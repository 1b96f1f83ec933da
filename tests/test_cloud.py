"""Cloud runs through SkyPilot: the task YAML as SkyPilot parses it, the sweep's plan and cap, and the job's
script on a "VM" (a fresh clone and HOME) with a local bare repo as `origin` and moto as the DVC remote,
killed mid-training as a reclaimed spot VM is, then run again on a new one as SkyPilot's recovery does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workspace import (
    CREDENTIAL,
    ROOT,
    S3_KEY_ID,
    S3_SECRET,
    SHORT_JOB,
    assert_one_line_error,
    child_env,
    commit,
    mirrored_steps,
    own_stage_server,
    pushed_to_origin,
    ran,
    sh,
    shell_commands,
    train_losses,
    use_remote,
    user_machine_env,
    wait_for,
)

TASKS = sorted((ROOT / "cloud").glob("*.yaml"))
TASK = ROOT / "cloud/train.yaml"
GRID = ["-S", "lora.r=4,8,16,32", "-S", "train.lr=0.0001,0.0002"]  # the sweep: eight trainings
GPU_COUNTS = ["L4:x", "T4:0.5", "L4:0", "L4:-2"]  # not a whole number of at least 1
SAME_LAST_KEY = [["-S", "train.seed=1"], ["-S", "eval.seed=1"]]


def validate(sky_python: Path, *paths: Path) -> subprocess.CompletedProcess:
    return sh(ROOT, str(sky_python), "cloud/validate.py", *map(str, paths), check=False)


def test_the_task_yamls_are_valid_skypilot_tasks(sky_python):
    result = validate(sky_python, *TASKS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("valid SkyPilot task") == len(TASKS) >= 1


@pytest.mark.parametrize(
    "breakage",
    [
        ("resources", "use_spot", "maybe"),  # a wrong type
        ("resources", "accelerator", "T4:1"),  # a misspelled key
        ("envs", "lora.r", "8"),  # not an environment variable name
    ],
)
def test_skypilot_refuses_a_broken_task_in_one_line(sky_python, tmp_path, breakage):
    section, key, value = breakage
    task = yaml.safe_load(TASK.read_text())
    task[section][key] = value
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(task))
    assert_one_line_error(validate(sky_python, broken), str(broken))


def test_the_task_runs_the_job_script_on_spot_gpus_installed_as_colab_is():
    task = yaml.safe_load(TASK.read_text())
    resources = task["resources"]
    assert resources["use_spot"] is True and resources["job_recovery"]["strategy"]
    assert resources["job_recovery"]["max_restarts_on_errors"] == 0  # preemptions only: a failing run stops
    assert len({option["accelerators"].split(":")[0] for option in resources["any_of"]}) >= 3
    assert task["run"].strip() == "bash cloud/job.sh"
    notebook = set(shell_commands())  # the same install as the notebook's: the image's CUDA torch stays
    assert set(task["setup"].strip().splitlines()) <= notebook


def test_no_secret_is_written_in_a_task_yaml():
    for path in TASKS:
        task = yaml.safe_load(path.read_text())
        assert all(value is None for value in (task.get("secrets") or {}).values()), path  # names only
        for name, value in (task.get("envs") or {}).items():
            assert not any(word in name for word in ("TOKEN", "SECRET", "PASSWORD", "KEY")), f"{path}: {name}"
            assert value is None or "://" not in value or "@" not in value, f"{path}: {name}"
        assert not CREDENTIAL.search(path.read_text()), f"possible credential in {path}"


def sweep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return sh(ROOT, sys.executable, "scripts/sweep.py", *args, check=False, env=env)


def test_the_sweep_dry_run_prints_one_job_per_combination_and_the_cost():
    result = sweep(*GRID, "--dry-run")
    assert result.returncode == 0, result.stderr
    launches = [line for line in result.stdout.splitlines() if line.startswith("sky jobs launch cloud/train.yaml ")]
    assert len(launches) == 8
    assert len({line.split("--env EXPERIMENT=")[1].split()[0] for line in launches}) == 8
    assert (
        "'SETS=lora.r=16 train.lr=0.0002'" in result.stdout
        and "EXPERIMENT=lora.r=16,train.lr=0.0002" in result.stdout
        and "RESULTS_BRANCH=results/sky/lora.r=16,train.lr=0.0002" in result.stdout
    )
    assert all("--secret DAGSHUB_TOKEN --secret GITHUB_TOKEN" in line for line in launches)  # names, no values
    assert "8 job(s) of at most 8: about 24 GPU-hours" in result.stdout and "approximate" in result.stdout


def test_a_grid_over_the_cap_is_refused_in_one_line():
    assert_one_line_error(sweep(*GRID, "-S", "quant.bits=4,16", "--dry-run"), "16 jobs", "cap of 8", "--max-jobs")
    assert sweep(*GRID, "-S", "quant.bits=4,16", "--max-jobs", "16", "--dry-run").returncode == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["-S", "lora.r=8,0"], ["-S lora.r=0", "'lora.r' must be >= 1"]),  # a bad value
        (["-S", "lora.rank=8"], ["unknown key 'lora.rank'"]),  # a bad key
        (["-S", "lora.r=8 train.lr=1"], ["-S lora.r=8 train.lr=1", "cannot hold a space"]),  # the VM splits SETS
        (["-S", "model.revision=v1..2"], ["results/sky/model.revision=v1..2 is not a valid git branch"]),
        (["-S", "model.revision=x.lock"], ["results/sky/model.revision=x.lock is not a valid git branch"]),
        (["-S", "lora.r=8", "--gpus", "L4:3"], ["train.processes (3)"]),
        *[(["-S", "lora.r=8", "--gpus", gpus], [f"--gpus {gpus}: expected GPU[:COUNT]"]) for gpus in GPU_COUNTS],
    ],
)
def test_a_bad_sweep_is_refused_in_one_line_before_a_cost_or_a_launch(args, said, tmp_path):
    """What the VM would fail on after it is paid for: refused here, before the cost is printed, and nothing is
    launched (a `sky` on PATH would record a launch)."""
    (tmp_path / "sky").write_text(f"#!/bin/sh\necho launched >> {tmp_path / 'launches'}\n")
    (tmp_path / "sky").chmod(0o755)
    result = sweep(*args, env=child_env(PATH=f"{tmp_path}:{os.environ['PATH']}"))
    assert_one_line_error(result, *said)
    assert "GPU-hours" not in result.stdout and not (tmp_path / "launches").exists()


def test_names_carry_the_whole_assignments_and_stay_apart():
    """`train.seed=1` and `eval.seed=1` once both became `seed1`: one experiment and branch for two runs."""
    names = {sweep(*s, "--dry-run").stdout.split("--env EXPERIMENT=")[1].split()[0] for s in SAME_LAST_KEY}
    assert names == {"train.seed=1", "eval.seed=1"}


# The shared trained workspace's training (tests/workspace.py TUNED) on the tiny Llama: 24 steps, a checkpoint
# every 6, so the mirror holds one well before training ends; the rest as SHORT_JOB.
SECTIONS = {**SHORT_JOB, "train": {**SHORT_JOB["train"], "max_steps": 24}, "ops": {"save_every": 6}}
GITHUB_TOKEN = "ghs_" + "testonly" * 4  # built at run time: no token-shaped string in a tracked file


def new_vm(tmp_path: Path, origin: Path, name: str, s3_endpoint: str, **job: str) -> tuple[Path, dict[str, str]]:
    """A new VM: main's files and .git on `origin` (a clone: what `sky jobs launch` uploads), no git identity,
    the job's envs (RESULTS_BRANCH, EXPERIMENT, SETS) and credentials for the local servers."""
    sh(tmp_path, "git", "clone", "-q", "-b", "main", str(origin), name)
    env = user_machine_env(
        tmp_path / f"home-{name}",
        **{**job, "S3_ENDPOINT": s3_endpoint},
        **{"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "GITHUB_TOKEN": GITHUB_TOKEN},
    )
    return tmp_path / name, env


@pytest.mark.slow
def test_a_preempted_job_resumes_on_a_new_vm_and_a_relaunch_after_a_fix_starts_a_branch_of_its_own(
    tmp_path, tiny_model_dir, s3_endpoint
):
    """A sweep's job is reclaimed mid-training and SkyPilot's new VM goes on from the mirrored checkpoint to land
    its branch and experiment. Then the code is fixed on main and the same job relaunched: its branch holds the
    old commit's run, which the job does not continue: it starts a branch of its own from the fixed commit and
    says so in one line (scripts/results_branch.sh, the job's first step; the rest is the job the second VM ran).
    One origin for both: the relaunch's "old run" is the resumed one."""
    origin = tmp_path / "origin.git"
    laptop = pushed_to_origin(tmp_path / "laptop", origin, tiny_model_dir, SECTIONS)  # main: the launch commit
    job = {"RESULTS_BRANCH": "results/sky/lora.r=8", "EXPERIMENT": "lora.r=8", "SETS": "lora.r=8"}  # as sweep.py sends

    # The first VM trains until a checkpoint is mirrored, then is reclaimed: everything on it is gone at once.
    first, env = new_vm(tmp_path, origin, "vm-a", s3_endpoint, **job)
    log_a = tmp_path / "vm-a.log"
    before = mirrored_steps(s3_endpoint)
    with open(log_a, "w") as log, own_stage_server(env) as env:  # each VM's stages fork from its own server
        launched = subprocess.Popen(
            ["bash", "cloud/job.sh"], cwd=first, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        new = lambda: {k: v for k, v in mirrored_steps(s3_endpoint).items() if before.get(k) != v and v >= 6}  # noqa: E731
        wait_for(new, timeout=600, proc=launched, every=0.2)
        os.killpg(launched.pid, signal.SIGKILL)
        launched.wait()
    [step] = new().values()
    shutil.rmtree(first)
    assert "results go to results/sky/lora.r=8, a new branch" in log_a.read_text()

    # SkyPilot starts the job again on a new VM: same launch commit, same command.
    second, env = new_vm(tmp_path, origin, "vm-b", s3_endpoint, **job)
    with own_stage_server(env) as env:
        resumed = sh(second, "bash", "cloud/job.sh", env=env)
    output = resumed.stdout + resumed.stderr
    assert "going on from origin/results/sky/lora.r=8" in output  # the stages the lost VM finished come back
    reran = ran(output)
    assert reran == ["train", "generate_base", "evaluate"]  # from the one it was killed in; each pushed once
    assert output.count("pushed results/sky/lora.r=8 to origin") == len(reran)
    assert f"restored checkpoint step-{step:06d} of this run from s3://dvc/lorapipe" in output
    assert "pushed experiment lora.r=8 to origin" in output
    assert "checkpoints mirrored; training waited" in output  # what the mirror cost training: every run says

    # The results branch on origin holds the run's record; the experiment is there for `dvc exp pull`.
    on_branch = sh(origin, "git", "ls-tree", "-r", "--name-only", "results/sky/lora.r=8").stdout.split()
    assert {"dvc.lock", "metrics/train.json", "metrics/eval.json"} <= set(on_branch)
    assert "lora.r=8" in sh(laptop, "dvc", "exp", "list", "origin", "--name-only").stdout.split()  # based on main
    use_remote(laptop, s3_endpoint)
    sh(laptop, "dvc", "exp", "pull", "origin", "lora.r=8")
    assert "lora.r=8" in sh(laptop, "dvc", "exp", "show", "--csv").stdout

    # Every step's loss, the restored ones too. The restored checkpoint is the uploaded one byte for byte
    # (test_mirror), and resuming one ends as the uninterrupted run (test_training's killed run).
    assert len(train_losses(second / "metrics")) == SECTIONS["train"]["max_steps"]

    # No secret in the jobs' logs, in what they pushed, or in the VM's git config (the token is read at push time).
    for text in (log_a.read_text(), output, (second / ".git/config").read_text()):
        assert S3_SECRET not in text and GITHUB_TOKEN not in text
    assert sh(origin, "git", "grep", "-F", S3_SECRET, "results/sky/lora.r=8", check=False).returncode == 1

    # A fix lands on main and the same job is relaunched from it. Its branch on origin holds the old commit's run:
    # the new VM's job starts a branch of its own from the fix, and says so in one line. Past that choice the job
    # is the one the second VM ran: the DAG on the checked-out commit, then the experiment of the launch commit.
    evaluate = laptop / "stages/evaluate.py"
    evaluate.write_text(evaluate.read_text() + "# fixed\n")
    commit(laptop, "fix evaluate")
    sh(laptop, "git", "push", "-q", "origin", "main")
    fix = sh(laptop, "git", "rev-parse", "HEAD").stdout.strip()
    third, env = new_vm(tmp_path, origin, "vm-c", s3_endpoint, **job)
    chosen = sh(third, "bash", "scripts/results_branch.sh", job["RESULTS_BRANCH"], fix, env=env).stdout
    assert chosen.splitlines() == [
        f"results go to results/sky/lora.r=8-{fix[:10]}, a new branch from {fix[:10]}: origin/results/sky/lora.r=8 "
        f"holds another commit's results (it did not grow from {fix[:10]})"
    ]
    assert sh(third, "git", "branch", "--show-current").stdout.strip() == f"results/sky/lora.r=8-{fix[:10]}"
    assert sh(third, "git", "rev-parse", "HEAD").stdout.strip() == fix  # the fixed code runs, not the old branch's


def test_the_job_script_names_what_it_needs_in_one_line(tmp_path):
    env = child_env(RESULTS_BRANCH="")
    result = subprocess.run(["bash", str(ROOT / "cloud/job.sh")], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "set RESULTS_BRANCH (cloud/train.yaml sets it)" in result.stderr
