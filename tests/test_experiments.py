"""`dvc exp` workflows on the data stages: a queued sweep, show, apply and branch."""

from __future__ import annotations

import csv
import json

import yaml

from tests.workspace import queue_status, sh, wait_for


def experiment_params(repo) -> dict[str, dict]:
    """name -> params.yaml values, from `dvc exp show --json`."""
    out = {}
    for rev in json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout):
        for exp in rev.get("experiments") or []:
            for run in exp.get("revs", []):
                out[run["name"]] = run["data"]["params"]["params.yaml"]["data"]
    return out


def test_queued_sweep_then_show_apply_and_branch(repo):
    for size in (600, 700):
        sh(repo, "dvc", "exp", "run", "split", "--queue", "-n", f"size-{size}", "-S", f"sample.size={size}")
    sh(repo, "dvc", "queue", "start", "-j", "1")

    def swept() -> bool:
        status = queue_status(repo)
        assert "Failed" not in status.values(), sh(repo, "dvc", "queue", "logs", "size-600", check=False).stdout
        return status == {"size-600": "Success", "size-700": "Success"}

    wait_for(swept, timeout=600, every=2)
    params = experiment_params(repo)
    assert params["size-600"]["sample"]["size"] == 600 and params["size-700"]["sample"]["size"] == 700

    # The sweep ran only up to `split`, so DVC warns that later stages have nothing to check out;
    # the experiment's params, metrics and data outputs are applied all the same.
    sh(repo, "dvc", "exp", "apply", "size-700", check=False)
    sh(repo, "dvc", "checkout", "--with-deps", "split")
    assert yaml.safe_load((repo / "params.yaml").read_text())["sample"]["size"] == 700
    assert json.loads((repo / "metrics/sample.json").read_text())["sampled"] == 700

    sh(repo, "dvc", "exp", "branch", "size-600", "sample-600")
    shown = sh(repo, "git", "show", "sample-600:params.yaml").stdout
    assert yaml.safe_load(shown)["sample"]["size"] == 600


def test_settings_are_set_per_experiment_and_are_no_column_of_dvc_exp_show(repo):
    """What re-runs no stage (ops, export) is in settings.yaml, which no stage tracks: `dvc exp run -S
    settings.yaml:KEY=VALUE` (docs/experiments.md) sets it for one experiment, whose commit holds it, and
    `dvc exp show`, which lists every key of params.yaml, shows none of it. One stage runs."""
    sh(repo, "dvc", "exp", "run", "download", "-n", "patient", "-S", "settings.yaml:ops.download_retries=5")
    header, *rows = csv.reader(sh(repo, "dvc", "exp", "show", "--csv").stdout.splitlines())
    assert {"sample.size", "lora.r", "train.lr"} <= set(header)
    assert not [column for column in header if column.startswith(("ops.", "export."))], header
    (rev,) = [row[header.index("rev")] for row in rows if row[header.index("Experiment")] == "patient"]
    settings = sh(repo, "git", "show", f"{rev}:settings.yaml").stdout
    assert yaml.safe_load(settings)["ops"]["download_retries"] == 5
    assert sh(repo, "git", "diff", "HEAD", rev, "--name-only", "--", "params.yaml").stdout == ""
