"""The static results page: every experiment, `dvc plots` curves as inline SVG, samples escaped."""

from __future__ import annotations

import json
import re

import pytest

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_SCORES, TRAIN_LOG, VAL_LOG
from lorapipe.reporting.results_page import samples_table
from tests.browser import save_screenshot
from tests.workspace import commit_metrics, commit_scores, score_rows, sh


@pytest.mark.slow
def test_page_lists_every_experiment_with_curves_and_opens_offline_in_a_browser(readme_flow, browser, tmp_path):
    """The demo's run (`demo`), the lora.r=8 experiment and the sweep's lora.r=4 and 32 runs; the workspace holds
    the lora.r=4 run's results."""
    from selenium.webdriver.common.by import By

    repo, named = readme_flow.repo, readme_flow.experiments
    out = tmp_path / "site/index.html"
    sh(repo, "python", "-m", "lorapipe.reporting.results_page", "-o", str(out))
    page = out.read_text()
    # Self-contained: nothing to run, nothing to fetch.
    assert "<script" not in page and 'src="http' not in page and 'href="http' not in page

    browser.get(out.as_uri())
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table:first-of-type tr")]
    # lora.r is what the experiments changed
    assert rows[0].split()[:3] == ["experiment", "rev", "lora.r"]
    by_name = {row.split()[0]: row.split() for row in rows[1:]}
    assert {name: by_name[name][2] for name in ["demo", *named.values()]} == {"demo": "16"} | {
        name: r for r, name in named.items()
    }
    # Their data is the same: a line each against the earliest run.
    for name in named.values():
        line = f"{name} against demo: Data unchanged: same hashes for raw, clean, sample, split, tokenized."
        assert f"<p>{line}</p>" in page
    # The workspace holds the lora.r=4 run's results: one row for that run, not two.
    assert "workspace" not in by_name and f"The workspace holds the results of {named['4']}." in page
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    for exp in shown[1]["experiments"]:
        rev = exp["revs"][0]
        rouge = rev["data"]["metrics"]["metrics/eval.json"]["data"]["tuned"]["rougeL"]
        assert f"{rouge:.3f}" in by_name[rev["name"]]  # ROUGE-L's decimals, as in every scores table
        # Deltas carry their 95% interval over the experiment's own test samples.
        row = " ".join(by_name[rev["name"]])
        assert re.search(r"[+-]\d\.\d{3} \([+-]\d\.\d{3}\.\.[+-]\d\.\d{3}\)", row), row

    # Output health: each run's tuned value and its change from the base model, with the interval and verdict.
    health = [r.text for r in browser.find_elements(By.XPATH, "//h2[.='Output health']/following::table[1]//tr")]
    assert health[0].startswith("experiment runaway share: tuned, Δ vs base (95% CI)"), health
    for exp in shown[1]["experiments"]:
        rev = exp["revs"][0]
        runaway = json.loads(sh(repo, "git", "show", f"{rev['rev']}:{EVAL_DETAILS}").stdout)["tuned"]["runaway"]
        row = next(line for line in health if line.startswith(rev["name"] + " "))
        assert row.startswith(f"{rev['name']} {runaway:.3f}, ") and re.search(
            r"\((better|worse|no clear change)\)", row
        )

    # Experiment vs experiment: r=8's tuned model against the demo's (r=16), paired over the 4 samples both scored.
    pairs = [
        r.text for r in browser.find_elements(By.XPATH, "//h2[.='Experiment vs experiment']/following::table[1]//tr")
    ]
    assert pairs[0].startswith("experiment vs Δ ROUGE-L (95% CI) Δ BLEU (95% CI)"), pairs
    pair = next(p for p in pairs if p.startswith(f"{named['8']} demo "))
    assert re.search(r"[+-]\d\.\d{3} \([+-]\d\.\d{3}\.\.[+-]\d\.\d{3}\) ", pair) and pair.endswith("4 paired"), pair

    # The token lengths table shows lengths.json's numbers, as the lengths stage wrote them.
    lengths = json.loads((repo / "metrics/lengths.json").read_text())
    cells = browser.find_elements(By.XPATH, "//h2[starts-with(., 'Token lengths')]/following::table[1]//tr[2]/td")
    title = lengths["prompt"]["title"]
    assert [c.text for c in cells][:2] == ["prompt (title tokens)", str(title["budget"])]
    assert [c.text for c in cells][5:] == [str(title[k]) for k in ("p50", "p90", "p95", "p99", "max")]

    charts = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    titles = " ".join(c.text for c in charts)
    # loss curves, each training process's speed, the two length histograms and the score bars; no quantization
    # study ran (one bit width)
    assert len(charts) == 6 and TRAIN_LOG.as_posix() in titles and VAL_LOG.as_posix() in titles
    assert "training speed (tokens/s)" in titles
    assert "prompt tokens" in titles and "description tokens" in titles and "quant.bits" not in titles
    assert all(c.size["width"] > 200 and c.size["height"] > 200 for c in charts)
    assert named["8"] in titles and "demo" in titles  # one curve per experiment, in the legend
    samples = browser.find_elements(By.CSS_SELECTOR, "table:last-of-type tr")
    assert len(samples) == 1 + 4  # header + the run's 4 samples
    shot = save_screenshot(browser, tmp_path / "results.png")
    assert shot.stat().st_size > 10_000


def test_samples_are_escaped_and_cut_like_the_reports():
    table = samples_table([{"title": "<script>alert(1)</script>", "reference": "a & b", "base": "<b>", "tuned": "x"}])
    assert "<script>" not in table and "&lt;script&gt;" in table and "a &amp; b" in table and "&lt;b&gt;" in table
    assert f"<td>{'y' * 400}…</td>" in samples_table([{"title": "y" * 5000}])


def test_the_workspace_row_is_left_out_only_while_it_repeats_a_listed_run(repo, tmp_path):

    commit_metrics(repo, 0.3, 16, "a run")
    commit_scores(repo, score_rows(range(20), shift=0.1), "its per-sample scores")
    out = tmp_path / "index.html"
    sh(repo, "python", "-m", "lorapipe.reporting.results_page", "-o", str(out))
    page = out.read_text()
    assert "<td>workspace</td>" not in page and re.search(r"The workspace holds the results of \w+\.", page)
    # Scores of another run in the workspace, not committed: the workspace is a run of its own.
    (repo / EVAL_SCORES).write_text("".join(json.dumps(r) + "\n" for r in score_rows(range(20), shift=0.2)))
    sh(repo, "python", "-m", "lorapipe.reporting.results_page", "-o", str(out))
    page = out.read_text()
    assert "<td>workspace</td>" in page and "The workspace holds" not in page
