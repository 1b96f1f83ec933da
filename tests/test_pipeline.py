"""The DAG through DVC itself, in a temp git + DVC repo: what `make demo` and `dvc exp run` do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_JSON, EVAL_SCORES, EXPORT_JSON, MERGED, TRAIN_DETAILS, TRAIN_JSON
from lorapipe.core.metric_files import EVAL_HEADLINE, TRAIN_HEADLINE, headline
from lorapipe.core.record_ids import record_id
from lorapipe.eval.corpus_metrics import corpus_bleu, perplexity
from lorapipe.eval.eval_files import read_scores
from lorapipe.reporting.compare import HEALTH, METRICS, columns, tuned_vs_base
from tests.workspace import ran, sh

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


def test_data_bookkeeping_is_written_but_is_not_a_dvc_metric(repo):
    """Checksums, byte and drop counts stay out of `dvc metrics diff` and `dvc exp show`, as plain outputs."""
    sh(repo, "dvc", "repro", "split")
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout or "{}")
    listed = {path for rev in shown.values() for path in rev.get("data", {})}
    assert listed == {"metrics/train.json", "metrics/eval.json"}  # declared, not yet made
    assert json.loads((repo / "metrics/clean.json").read_text())["kept"] > 0
    assert json.loads((repo / "metrics/sample.json").read_text())["sampled"] > 0
    assert "up to date" in sh(repo, "dvc", "status", "split").stdout


def test_changing_sample_size_reruns_only_sample_and_split(repo):
    sh(repo, "dvc", "repro", "split")
    out = sh(repo, "dvc", "exp", "run", "split", "-S", "sample.size=900")
    assert ran(out.stdout) == ["sample", "split"]
    assert json.loads((repo / "metrics/sample.json").read_text())["sampled"] == 900


def test_sample_larger_than_available_keeps_all_and_says_so(repo):
    sh(repo, "dvc", "repro", "split")
    out = sh(repo, "dvc", "exp", "run", "split", "-S", "sample.size=999999")
    assert ran(out.stdout) == ["sample", "split"]
    sample = json.loads((repo / "metrics/sample.json").read_text())
    assert sample["short_of_requested"] is True and sample["sampled"] == sample["unique"]


@pytest.mark.slow
def test_whole_dag_on_smollm2_then_lora_r8_reruns_only_train_and_evaluate(experiments):
    """The offline demo's DAG on the real SmolLM2 (shortened), then `dvc exp run -S lora.method=dora`, then
    `-S lora.method=lora -S lora.r=8`."""
    repo = experiments.repo
    assert set(ran(experiments.first)) >= {"base_model", "tokenize", "train", "evaluate"}
    result = json.loads((repo / EVAL_DETAILS).read_text())
    assert set(result) >= {"base", "tuned", "delta"} and result["samples"] == 4
    # The DVC metric holds the headline figures alone; the details file is the whole record.
    assert json.loads((repo / EVAL_JSON).read_text()) == headline(result, EVAL_HEADLINE)
    train_record = json.loads((repo / TRAIN_DETAILS).read_text())
    assert json.loads((repo / TRAIN_JSON).read_text()) == headline(train_record, TRAIN_HEADLINE)
    for name in ("base", "tuned"):
        assert set(result[name]) == {"bleu", "rouge1", "rouge2", "rougeL", "perplexity", *HEALTH}
    samples = [json.loads(line) for line in (repo / "metrics/eval_samples.jsonl").read_text().splitlines()]
    assert samples and set(samples[0]) == {"id", "title", "reference", "base", "tuned"}
    # Per-sample scores of every test sample, from which the headline numbers are recomputed exactly.
    scores = read_scores(path=repo / EVAL_SCORES)
    assert len(scores) == 4 and [s["id"] for s in scores] == [record_id(s["title"], s["reference"]) for s in scores]
    assert [s["tuned"]["text"] for s in scores[: len(samples)]] == [s["tuned"] for s in samples]
    for name in ("base", "tuned"):
        assert corpus_bleu(columns(scores, name, METRICS["bleu"])) == pytest.approx(result[name]["bleu"], abs=1e-4)
        assert np.mean([s[name]["rougeL"] for s in scores]) == pytest.approx(result[name]["rougeL"], abs=1e-4)
        ppl = perplexity(columns(scores, name, METRICS["perplexity"]))
        assert ppl == pytest.approx(result[name]["perplexity"], rel=1e-3)
        for metric in HEALTH:  # the report's statistic of the per-sample health is the record's
            change = tuned_vs_base(scores, metric)
            assert (change.old, change.new)[name == "tuned"] == pytest.approx(result[name][metric], abs=1e-4)
    assert json.loads((repo / "metrics/base_model.json").read_text())["sha256"].startswith("b179c952")

    # lora.r=8: the base model's outputs (generate_base) stay cached, only the tuned model decodes.
    assert "generate_base" in ran(experiments.first)
    assert ran(experiments.second) == ["train", "evaluate"]
    assert ran(experiments.dora) == ["train", "evaluate"]  # lora.method is a lora.* key like lora.r
    table = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    runs = {r.get("name"): r for rev in table for exp in rev.get("experiments") or [] for r in exp.get("revs", [])}
    assert {"smollm2-r16", "smollm2-r8", "smollm2-dora"} <= set(runs)

    def record(name: str, path: Path) -> dict:  # an experiment's details file, from its commit
        return json.loads(sh(repo, "git", "show", f"{runs[name]['rev']}:{path}").stdout)

    assert record("smollm2-dora", TRAIN_DETAILS)["lora_method"] == "dora"
    assert runs["smollm2-dora"]["data"]["params"]["params.yaml"]["data"]["lora"]["r"] == 16
    base = [record(name, EVAL_DETAILS)["base"] for name in ("smollm2-r16", "smollm2-r8")]
    assert base[0] == base[1] == result["base"]

    # The export ran after the experiments, outside DVC: nothing to re-run, `dvc status` clean.
    assert "export: models/merged" in experiments.export
    assert (repo / MERGED / "model.safetensors").is_file() and (repo / EXPORT_JSON).is_file()
    assert ran(sh(repo, "dvc", "repro").stdout) == []
    assert "up to date" in sh(repo, "dvc", "status").stdout
