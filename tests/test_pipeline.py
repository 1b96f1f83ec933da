"""The DAG through DVC itself, in a temp git + DVC repo: what `make demo` and `dvc exp run` do."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.conftest import ran, sh

DATA_STAGES = ["download", "clean", "sample", "split"]


def test_data_stages_run_then_noop_repro_is_instant(repo):
    first = sh(repo, "dvc", "repro", "split")
    assert ran(first.stdout) == DATA_STAGES
    sizes = json.loads((repo / "metrics/split.json").read_text())
    assert sizes["train"] > 0 and sizes["test"] > 0
    clean = json.loads((repo / "metrics/clean.json").read_text())
    assert clean["dropped"]["empty_content"] > 0 and clean["malformed"] == 6

    started = time.perf_counter()
    again = sh(repo, "dvc", "repro", "split")
    assert time.perf_counter() - started < 5
    assert ran(again.stdout) == []
    assert "didn't change" in again.stdout
    assert "up to date" in sh(repo, "dvc", "status", "split").stdout


def test_metrics_show_reads_the_data_metrics(repo):
    sh(repo, "dvc", "repro", "split")
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert files["metrics/clean.json"]["data"]["kept"] > 0
    assert files["metrics/sample.json"]["data"]["sampled"] > 0


def test_changing_sample_size_reruns_only_sample_and_split(repo):
    sh(repo, "dvc", "repro", "split")
    out = sh(repo, "dvc", "exp", "run", "split", "-S", "sample.size=900")
    assert ran(out.stdout) == ["sample", "split"]
    assert json.loads((repo / "metrics/sample.json").read_text())["sampled"] == 900
    sh(repo, "git", "checkout", "params.yaml")


def test_sample_larger_than_available_keeps_all_and_says_so(repo):
    out = sh(repo, "dvc", "exp", "run", "split", "-S", "sample.size=999999")
    assert ran(out.stdout) == ["sample", "split"]
    sample = json.loads((repo / "metrics/sample.json").read_text())
    assert sample["short_of_requested"] is True and sample["sampled"] == sample["unique"]
    sh(repo, "git", "checkout", "params.yaml")


@pytest.mark.slow
def test_whole_dag_on_smollm2_then_lora_r8_reruns_only_train_and_evaluate(repo):
    """The offline demo's DAG on the real SmolLM2 (shortened), then `dvc exp run -S lora.r=8`."""
    quick = {
        "train.max_steps=2",
        "train.micro_batch=1",
        "train.grad_accum=1",
        "train.eval_every=1",
        "eval.max_samples=4",
        "eval.batch_size=4",
        "eval.max_new_tokens=12",
    }
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for item in quick:
        key, value = item.split("=")
        section, name = key.split(".")
        params[section][name] = int(value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "commit", "-qam", "short run")

    first = sh(repo, "dvc", "exp", "run", "-n", "smollm2-r16")
    assert set(ran(first.stdout)) >= {"base_model", "tokenize", "train", "evaluate"}
    result = json.loads((repo / "metrics/eval.json").read_text())
    assert set(result) >= {"base", "tuned", "delta"} and result["samples"] == 4
    for name in ("base", "tuned"):
        assert set(result[name]) == {"bleu", "rouge1", "rouge2", "rougeL", "perplexity"}
    samples = [json.loads(line) for line in (repo / "metrics/eval_samples.jsonl").read_text().splitlines()]
    assert samples and set(samples[0]) == {"title", "reference", "base", "tuned"}
    assert json.loads((repo / "metrics/base_model.json").read_text())["sha256"].startswith("b179c952")

    second = sh(repo, "dvc", "exp", "run", "-n", "smollm2-r8", "-S", "lora.r=8")
    assert ran(second.stdout) == ["train", "evaluate"]
    table = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    names = {exp.get("name") for rev in table for exp in (rev.get("experiments") or []) for exp in exp.get("revs", [])}
    assert {"smollm2-r16", "smollm2-r8"} <= names
    assert "up to date" in sh(repo, "dvc", "status").stdout
