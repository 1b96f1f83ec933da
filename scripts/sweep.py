"""Launch one SkyPilot managed job (cloud/train.yaml) per params combination, after saying what it costs.

    python scripts/sweep.py -S lora.r=4,8,16,32 -S train.lr=0.0001,0.0002 --dry-run   # the jobs and the cost
    python scripts/sweep.py -S lora.r=4,8,16,32 -S train.lr=0.0001,0.0002             # launch them

`-S` takes what `dvc exp run -S` takes: a comma list makes one job per value, several `-S` the grid
of all combinations. Each job ends as a DVC experiment on `origin` named after its whole assignments
(`lora.r=8,train.lr=0.0001`), on the branch `results/sky/<that name>`: `dvc exp pull origin` then
`dvc exp show` shows them side by side. Every combination is checked here as the job will read it
(its params, its name, the GPU count) before a cost is printed. Needs `sky` on PATH (`make sky`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.params import PARAM_FILES
from lorapipe.workspace.profiles import apply_profile, parse_sets, split_sets

TASK = Path("cloud/train.yaml")
MAX_JOBS = 8  # a sweep larger than this is refused unless --max-jobs says so: each job is hours of GPU
# Estimates, not measurements (no GPU run has been timed yet): set yours from a first run's
# metrics/train_details.json (train_seconds) and `sky show-gpus <GPU>` (today's spot prices).
HOURS_PER_JOB = 3.0  # one TinyLlama 1.1B QLoRA run on the 40k sample, data stages and evaluation included
USD_PER_GPU_HOUR = 0.30  # approximate spot price of a T4/L4/A10G GPU (2026); on-demand is about 3x


def grid(sweeps: list[str]) -> list[list[str]]:
    """`-S` values -> one list of `key=value` assignments per combination (the first key varies slowest)."""
    axes = []
    for sweep in sweeps:
        key, _, values = sweep.partition("=")
        if not (key and values):
            raise UserError(f"-S {sweep}: expected SECTION.KEY=VALUE[,VALUE...], e.g. lora.r=4,8")
        axes.append([f"{key}={value}" for value in values.split(",")])
    return [list(combination) for combination in itertools.product(*axes)]


def experiment_name(assignments: list[str]) -> str:
    """`lora.r=8 train.lr=0.0001` -> `lora.r=8,train.lr=0.0001`: the whole assignments, so two jobs of other
    params never share a name (`train.seed=1` and `eval.seed=1` stay apart); `sky` for none."""
    return ",".join(assignments) or "sky"


def job_name(experiment: str) -> str:
    """A SkyPilot job name (letters and digits, single separators) that reads like the experiment's."""
    return "lorapipe-" + re.sub(r"[^A-Za-z0-9]+", "-", experiment).strip("-")


def gpu_count(gpus: str | None) -> int:
    """`--gpus L4:4` -> 4 (`L4` -> 1); a count that is not a whole number of at least 1 is refused."""
    if not gpus:
        return 1
    count = gpus.partition(":")[2] or "1"
    if not (count.isascii() and count.isdigit() and int(count) >= 1):
        raise UserError(f"--gpus {gpus}: expected GPU[:COUNT] with COUNT a whole number of at least 1, e.g. L4:4")
    return int(count)


def is_valid_ref(name: str) -> bool:
    """Whether git takes `name` as a branch name (git check-ref-format --branch)."""
    return subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True).returncode == 0


def check_job(assignments: list[str], gpus: int, branch_prefix: str) -> None:
    """Refuse here what the job would fail on after its VM is paid for: a value the job's SETS line cannot
    carry, a name that is no git branch or DVC experiment, params that do not validate."""
    if split_sets(" ".join(assignments)) != assignments:
        spaced = next(a for a in assignments if split_sets(a) != [a])
        raise UserError(
            f"-S {spaced}: a value cannot hold a space (the job gets its params as one space-separated line)"
        )
    name = experiment_name(assignments)
    branch = f"{branch_prefix}/{name}"
    if "/" in name or not is_valid_ref(branch):
        raise UserError(
            f"-S {' '.join(assignments)}: the job's experiment and branch are named after its params, and {branch} "
            "is not a valid git branch or DVC experiment name (no '/', '..', ':', '~', '^', '?', '*', '[', "
            "a trailing '.lock' or '.'; git check-ref-format)"
        )
    sets = [*assignments, *([f"train.processes={gpus}"] if gpus > 1 else [])]
    with tempfile.TemporaryDirectory() as folder:
        for name in PARAM_FILES:
            shutil.copy(name, Path(folder, name))
        try:
            apply_profile(parse_sets(sets), Path(folder))
        except UserError as err:  # named as the user wrote it, not as the temp copy it was tried on
            raise UserError(f"-S {' '.join(sets)}: {str(err).replace(f'{folder}/', '')}") from None


def launch_command(assignments: list[str], task: dict, gpus: str | None) -> list[str]:
    """`sky jobs launch` for one combination; secrets and unset envs by name: their values stay in this shell."""
    name = experiment_name(assignments)
    command = ["sky", "jobs", "launch", str(TASK), "-n", job_name(name), "-y", "--detach-run"]
    command += ["--env", f"SETS={' '.join(assignments)}", "--env", f"EXPERIMENT={name}"]
    command += ["--env", f"RESULTS_BRANCH={task['envs']['RESULTS_BRANCH']}/{name}"]
    command += [arg for env, value in task["envs"].items() if value is None for arg in ("--env", env)]
    command += [arg for secret in task["secrets"] for arg in ("--secret", secret)]
    return command + (["--gpus", gpus] if gpus else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="sweeps", action="append", default=[], metavar="KEY=V1,V2", help="(repeatable)")
    parser.add_argument("--max-jobs", type=int, default=MAX_JOBS, help="refuse a grid of more jobs (%(default)s)")
    parser.add_argument("--hours-per-job", type=float, default=HOURS_PER_JOB, help="estimate (%(default)s)")
    parser.add_argument("--usd-per-gpu-hour", type=float, default=USD_PER_GPU_HOUR, help="estimate (%(default)s)")
    parser.add_argument("--gpus", help="e.g. L4:4: several GPUs per job (train.processes); default cloud/train.yaml's")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and the cost, launch nothing")
    args = parser.parse_args(argv)
    combinations = grid(args.sweeps)
    if len(combinations) > args.max_jobs:
        raise UserError(
            f"the grid makes {len(combinations)} jobs, over the cap of {args.max_jobs}: "
            "drop values, or raise --max-jobs if you mean it"
        )
    gpus_per_job = gpu_count(args.gpus)
    task = yaml.safe_load(TASK.read_text())
    for assignments in combinations:
        check_job(assignments, gpus_per_job, task["envs"]["RESULTS_BRANCH"])
    commands = [launch_command(assignments, task, args.gpus) for assignments in combinations]
    for command in commands:
        print(shlex.join(command))
    gpu_hours = len(commands) * args.hours_per_job * gpus_per_job
    usd = gpu_hours * args.usd_per_gpu_hour
    print(
        f"{len(commands)} job(s) of at most {args.max_jobs}: about {gpu_hours:g} GPU-hours "
        f"({len(commands)} x {args.hours_per_job:g} h x {gpus_per_job} GPU), about ${usd:,.0f} at an approximate "
        f"${args.usd_per_gpu_hour:g}/GPU-hour spot price (estimates: --hours-per-job, --usd-per-gpu-hour)"
    )
    if args.dry_run:
        return
    if not shutil.which("sky"):
        raise UserError("sky: not found on PATH; install the launcher (make sky) and: source .venv-sky/bin/activate")
    if missing := [
        name
        for name in [*task["secrets"], *(e for e, v in task["envs"].items() if v is None)]
        if not os.environ.get(name)
    ]:
        raise UserError(f"{TASK}: set {', '.join(missing)} in this shell first (sent to the jobs, never written)")
    for command in commands:
        if subprocess.run(command).returncode != 0:
            raise UserError(f"sky jobs launch failed for {command[5]}; the jobs before it run: sky jobs queue")
    print("launched: sky jobs queue; afterwards dvc exp pull origin && dvc exp show")


if __name__ == "__main__":
    run_cli(main)
