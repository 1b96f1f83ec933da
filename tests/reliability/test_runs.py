"""Reliability across runs: concurrent experiments, failed runs, leftovers of the last good one.

Each test copies one repo after its first whole `dvc repro` (`tiny_repo`: a tiny random Llama, so training
takes seconds) and plays the scenario with real DVC and git.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import yaml

from lorapipe.core.artifacts import TRAIN_DETAILS, TRAIN_LOG
from tests.workspace import child_env, commit, dvc_stages, ran, sh, update_params, wait_for


def lock_params(repo: Path, stage: str) -> dict | None:
    entry = yaml.safe_load((repo / "dvc.lock").read_text())["stages"].get(stage)
    return entry and entry["params"]["params.yaml"]


def test_a_second_exp_run_cannot_attribute_the_first_runs_results_to_its_params(tiny_repo_copy):
    repo = tiny_repo_copy
    recorded = lock_params(repo, "train")  # the run committed before
    adapter = repo / "models/trained/adapter_model.safetensors"
    weights = adapter.read_bytes()
    # log_every 1: the check that params.yaml is unchanged runs at every step
    update_params(repo, {"train": {"max_steps": 2000}, "ops": {"save_every": 20, "log_every": 1}})
    commit(repo, "a longer run")
    first = subprocess.Popen(
        ["dvc", "exp", "run", "-n", "first"],
        cwd=repo,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: list(repo.glob("models/checkpoints/*/step-000020")), timeout=300, proc=first, every=0.1)
    # The first run's DVC paused (its stage trains on) while the second starts, so that it still holds the repo's
    # lock: DVC retries a held lock for 3 s, time enough for the first's stage to see the change and end.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = sh(repo, "dvc", "exp", "run", "-n", "second", "-S", "train.lr=0.01", check=False)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode != 0  # DVC's lock: but it has already rewritten params.yaml
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"] == 0.01
    out, _ = first.communicate(timeout=600)
    assert first.returncode != 0
    # DVC rewrites params.yaml in place: a check that read it mid-write found sections missing (which and how
    # many, by chance); read again once settled, the error names what the second run changed, alone.
    errors = [line for line in out.splitlines() if line.startswith("error: params.yaml:")]
    assert len(errors) == 1, out[-3000:]
    assert errors[0].startswith("error: params.yaml: train.lr changed while this stage ran"), errors[0]
    assert "dvc exp run --queue" in out
    # Nothing recorded the first run's weights under the second run's params: dvc.lock and the adapter are still
    # the committed run's (or DVC removed the adapter before training).
    assert lock_params(repo, "train") == recorded
    assert not adapter.exists() or adapter.read_bytes() == weights
    assert "first" not in sh(repo, "dvc", "exp", "list", "--name-only").stdout.split()


def test_failed_run_then_one_command_restores_the_last_good_experiment(tiny_repo_copy):
    repo = tiny_repo_copy
    sh(repo, "dvc", "exp", "save", "-n", "good")  # the last good run, kept as an experiment
    good_metrics = (repo / TRAIN_DETAILS).read_text()
    good_log = (repo / TRAIN_LOG).read_text()
    failed = sh(repo, "dvc", "exp", "run", "-S", "lora.target_modules=[nonexistent_proj]", check=False)
    assert failed.returncode != 0 and "lora.target_modules" in failed.stderr + failed.stdout
    assert not (repo / TRAIN_DETAILS).exists()  # DVC removes a stage's outputs before it runs

    sh(repo, "dvc", "exp", "apply", "good")  # the documented recovery (README, docs/reliability.md)
    assert (repo / TRAIN_DETAILS).read_text() == good_metrics
    assert (repo / TRAIN_LOG).read_text() == good_log
    assert (repo / "models/trained/adapter_model.safetensors").is_file()
    assert "up to date" in sh(repo, "dvc", "status", "dvc.yaml").stdout


def test_failed_run_after_a_committed_one_is_restored_from_the_run_cache(tiny_repo_copy):
    repo = tiny_repo_copy  # its good run committed
    good_metrics = (repo / TRAIN_DETAILS).read_text()
    update_params(repo, {"lora": {"target_modules": ["nonexistent_proj"]}})
    assert sh(repo, "dvc", "repro", check=False).returncode != 0
    assert not (repo / TRAIN_DETAILS).exists()

    restored = sh(repo, "bash", "-c", "git checkout -- params.yaml && dvc repro")  # the documented recovery
    assert ran(restored.stdout) == []  # nothing trains again: train comes back from DVC's run-cache
    assert "Stage 'train' is cached - skipping run" in restored.stdout
    assert (repo / TRAIN_DETAILS).read_text() == good_metrics


def test_checkpoints_and_operational_settings_are_not_part_of_the_record(tiny_repo_copy):
    repo = tiny_repo_copy
    ops = {"log_every": 7, "save_every": 3, "keep_checkpoints": 5, "download_timeout_s": 5, "download_retries": 1}
    update_params(repo, {"ops": ops})
    assert "up to date" in sh(repo, "dvc", "status", "dvc.yaml").stdout
    lock = (repo / "dvc.lock").read_text()
    assert "models/checkpoints" not in lock
    other = repo / "models/checkpoints/0123456789abcdef/step-000001"  # another experiment's checkpoint
    other.mkdir(parents=True)
    (other / "trainer_state.json").write_text(json.dumps({"step": 1}))
    assert "up to date" in sh(repo, "dvc", "status", "dvc.yaml").stdout


def cached_outputs(repo: Path) -> dict[str, str]:
    """dvc.lock's hash of every output DVC caches (cache: false files, like timings, are left out)."""
    stages = dvc_stages()  # resolved: an out's key is its path, not ${paths.NAME}
    uncached = {
        path
        for stage in stages.values()
        for kind in ("outs", "metrics", "plots")
        for entry in stage.get(kind, [])
        if isinstance(entry, dict)
        for path, options in entry.items()
        if options and options.get("cache") is False
    }
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {
        out["path"]: out["md5"]
        for name, entry in lock.items()
        for out in entry.get("outs", [])
        if out["path"] not in uncached
    }


def test_two_runs_of_the_same_inputs_give_the_same_cached_outputs(tiny_repo_copy):
    """Same commit, same machine, another hash seed and another HF_HUB_OFFLINE: every output DVC caches
    (the adapter too) has the same hash, so DVC sees nothing changed and re-runs nothing downstream. The forced
    train stage finds its finished run's checkpoints and trains every step again rather than "resuming" at the
    last one (which would report the resume's seconds as the run's)."""
    repo = tiny_repo_copy
    first = cached_outputs(repo)  # tiny_repo's run: a random hash seed per process, HF_HUB_OFFLINE=1
    assert "models/trained" in first and "data/base_outputs.json" in first
    assert list(repo.glob("models/checkpoints/*/step-*"))  # the finished run's
    environment = {k: v for k, v in child_env(PYTHONHASHSEED="2").items() if k != "HF_HUB_OFFLINE"}
    result = subprocess.run(["dvc", "repro", "--force"], cwd=repo, env=environment, capture_output=True, text=True)
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed[-3000:]
    assert "trains again from scratch" in printed and "resuming from" not in printed
    assert len(json.loads((repo / TRAIN_DETAILS).read_text())["sessions"]) == 1
    assert cached_outputs(repo) == first
