"""`dvc exp` workflows on the data stages: a queued sweep, show, apply and branch."""

from __future__ import annotations

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
