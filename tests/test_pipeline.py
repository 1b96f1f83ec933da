"""The DAG through DVC itself, in a temp git + DVC repo: what `make demo` and `dvc exp run` do."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_JSON, EVAL_SCORES, TRAIN_DETAILS, TRAIN_JSON
from lorapipe.core.metric_files import EVAL_HEADLINE, TRAIN_HEADLINE, headline
from lorapipe.core.record_ids import record_id
from lorapipe.eval.corpus_metrics import corpus_bleu, perplexity
from lorapipe.eval.eval_files import read_scores
from lorapipe.reporting.compare import HEALTH, METRICS, columns, tuned_vs_base
from tests.workspace import dvc_stages, ran, sh

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


def test_data_bookkeeping_is_written_but_is_not_a_dvc_metric(tiny_repo_copy):
    """Checksums, byte and drop counts stay out of `dvc metrics diff` and `dvc exp show`, as plain outputs."""
    repo = tiny_repo_copy
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout or "{}")
    listed = {path for rev in shown.values() for path in rev.get("data", {})}
    assert listed == {"metrics/train.json", "metrics/eval.json"}  # the headline figures alone
    assert json.loads((repo / "metrics/clean.json").read_text())["kept"] > 0
    assert json.loads((repo / "metrics/sample.json").read_text())["sampled"] > 0
    assert "up to date" in sh(repo, "dvc", "status", "split").stdout


def test_changing_sample_size_reruns_only_sample_and_split(tiny_repo_copy):
    repo = tiny_repo_copy
    out = sh(repo, "dvc", "exp", "run", "split", "-S", "sample.size=900")
    assert ran(out.stdout) == ["sample", "split"]
    assert json.loads((repo / "metrics/sample.json").read_text())["sampled"] == 900


def test_sample_larger_than_available_keeps_all_and_says_so(tiny_repo_copy):
    repo = tiny_repo_copy
    out = sh(repo, "dvc", "exp", "run", "split", "-S", "sample.size=999999")
    assert ran(out.stdout) == ["sample", "split"]
    sample = json.loads((repo / "metrics/sample.json").read_text())
    assert sample["short_of_requested"] is True and sample["sampled"] == sample["unique"]


@pytest.mark.slow
def test_whole_dag_on_smollm2_then_lora_r8_reruns_only_train_and_evaluate(readme_flow):
    """`make demo`'s DAG on the real SmolLM2 (shortened): every stage recorded, the scores' record recomputed from
    its per-sample scores; then `dvc exp run -S lora.r=8` re-runs train and evaluate alone (the base model's
    outputs stay cached), and the sweep's runs score the same base outputs."""
    repo = readme_flow.repo
    lock = yaml.safe_load(sh(repo, "git", "show", "demo:dvc.lock").stdout)["stages"]
    assert set(lock) == set(dvc_stages())  # make demo ran the whole DAG and committed its record
    assert ran(readme_flow.printed["dvc exp run -S lora.r=8"]) == ["train", "evaluate"]
    result = json.loads((repo / EVAL_DETAILS).read_text())  # the workspace: the sweep's lora.r=4 run
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
    # The GGUF's tokenizer is saved without how `make demo` loaded it (HF_HUB_OFFLINE=1): a `dvc repro -f`
    # without make gives models/base the same hash
    saved = json.loads((repo / "models/base/tokenizer_config.json").read_text())
    assert not {"local_files_only", "is_local"} & saved.keys(), saved

    # Every run scored the one decoding of the base model: the demo's, the lora.r=8 experiment's, this one's.
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    revs = {r.get("name"): r["rev"] for rev in shown for exp in rev.get("experiments") or [] for r in exp["revs"]}
    for rev in ("demo", revs[readme_flow.experiments["8"]]):
        assert json.loads(sh(repo, "git", "show", f"{rev}:{EVAL_DETAILS}").stdout)["base"] == result["base"]
