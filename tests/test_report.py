"""The PR report builder on a temp repo with two commits of metrics, and the workflows' hygiene."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_SAMPLES, EVAL_SCORES, TRAIN_DETAILS
from lorapipe.reporting.charts import LOSS_LOGS, loss_logs, loss_spec
from lorapipe.reporting.report import THIS, code, escape_cell, params_diff, samples_table
from lorapipe.reporting.results_page import cell as results_cell
from lorapipe.reporting.scores_table import HEALTH_NOTE
from tests.workspace import (
    BIDI_CONTROL,
    HOSTILE,
    ROOT,
    assert_one_line_error,
    commit_metrics,
    commit_scores,
    params_of,
    score_rows,
    sh,
    table_rows,
)

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
# `- ROUGE-L 0.312 -> 0.331 (+0.019, 95% CI +0.007..+0.031): better`
VERDICT = re.compile(r"^- (ROUGE-L|BLEU|perplexity) [\d.]+ -> [\d.]+ \(([+-][\d.]+), 95% CI (\S+)\): (.+)$", re.M)


def build_report(repo: Path, out: Path, base: str = "HEAD~1") -> str:
    sh(repo, sys.executable, "-m", "lorapipe.reporting.report", "--base", base, "-o", str(out / "report.md"))
    return (out / "report.md").read_text()


def change_rougel(rows: list[dict], by: float, text: str) -> list[dict]:
    return [{**r, "tuned": {**r["tuned"], "rougeL": r["tuned"]["rougeL"] + by, "text": text}} for r in rows]


VERDICTS = {"better": (0.05, "better"), "worse": (-0.05, "worse"), "identical": (0.0, "no clear change")}


@pytest.mark.parametrize(("shift", "expected"), VERDICTS.values(), ids=VERDICTS.keys())
def test_report_opens_with_a_verdict_per_headline_metric(repo, tmp_path, shift, expected):
    old = score_rows(range(200), shift=0.1)
    commit_scores(repo, old, "base branch")
    commit_scores(repo, change_rougel(old, shift, HOSTILE if shift else "a fine mug"), "pull request")
    report = build_report(repo, tmp_path)
    verdicts = VERDICT.findall(report)
    assert [v[0] for v in verdicts] == ["ROUGE-L", "BLEU", "perplexity"]
    assert verdicts[0][1] == f"{shift:+.3f}" and verdicts[0][3] == expected
    assert [v[3] for v in verdicts[1:]] == ["no clear change"] * 2  # BLEU and loss did not move
    assert report.index("- ROUGE-L") < report.index("###")  # the verdict comes first
    assert "paired over the 200 test samples both scored" in report and "not paired" not in report
    changed = report.split("### Samples that changed most")[1].split("###")[0]
    if shift:
        rows = [line for line in changed.splitlines() if line.startswith(("| +", "| -"))]
        assert len(rows) == 3 and all(line.startswith(f"| {shift:+.3f} |") for line in rows)
        # Model text reaches the comment inert: no mention, reference, link, math or HTML.
        for pattern in (r"@\w", r"#\d", r"\w://", r"www\.", r"(?<!\\)\$", "<b>", r"(?i)\bgh-\d", BIDI_CONTROL):
            assert not re.search(pattern, changed), pattern
    else:
        assert "No sample's tuned ROUGE-L changed." in changed
    # Both revisions' tuned vs base table: the same base model, the tuned ROUGE-L `shift` apart.
    old_rouge, new_rouge = table_rows(report.split("### Tuned vs base model")[1])[:2]
    assert old_rouge[1] == new_rouge[1] == "ROUGE-L" and new_rouge[0] == THIS and old_rouge[2] == new_rouge[2]
    assert float(new_rouge[3]) - float(old_rouge[3]) == pytest.approx(shift, abs=0.0011)
    assert new_rouge[5].endswith("(better)")  # the tuned model is 0.1 above the base in both


HEALTH_VERDICT = re.compile(r"^- (.+?) [\d.]+ -> [\d.]+ \(([+-][\d.]+), 95% CI (\S+)\): (.+)$", re.M)
HEALTH_LABELS = [
    "runaway share",
    "repeated 4-grams",
    "distinct-2",
    "length ratio (best 1)",
    "unsupported figures",
    "title echo or empty",
]
LOOPING = {"runaway": True, "repeat4": 0.6, "echo": False, "length_ratio": 3.0, "unsupported_figures": ["1000L"]}
HEALTHY = {"runaway": False, "repeat4": 0.0, "echo": False, "length_ratio": 1.0, "unsupported_figures": []}


def with_health(rows: list[dict], tuned: dict = HEALTHY, hostile_every: int = 0) -> list[dict]:
    """`rows` with output health: a base model that loops, the tuned model's `tuned` health, and every
    `hostile_every`-th tuned output a runaway of hostile text and hostile 'figures' (the file is untrusted)."""
    out = []
    for i, row in enumerate(rows):
        bad = hostile_every and i % hostile_every == 0
        health = {**LOOPING, "repeat4": 0.9, "unsupported_figures": [HOSTILE, "<b>5-year</b>"]} if bad else tuned
        text = HOSTILE if bad else row["tuned"]["text"]
        out.append({**row, "base": {**row["base"], **LOOPING}, "tuned": {**row["tuned"], **health, "text": text}})
    return out


@pytest.mark.parametrize("base_has_health", [False, True], ids=["base-before-health", "both-with-health"])
def test_report_gives_output_health_verdicts_and_shows_the_worst_outputs_inert(repo, tmp_path, base_has_health):
    old = score_rows(range(200), shift=0.1)
    commit_scores(repo, with_health(old, LOOPING) if base_has_health else old, "base branch")
    commit_scores(repo, with_health(old, hostile_every=50), "pull request: fewer runaways")
    report = build_report(repo, tmp_path)
    health = report.split("Output health")[1].split("The intervals cover")[0]
    verdicts = {label: (delta, verdict) for label, delta, _, verdict in HEALTH_VERDICT.findall(health)}
    assert list(verdicts) == HEALTH_LABELS
    # 4 of 200 tuned outputs still run away (hostile_every=50), against all of the base's or old tuned's.
    assert verdicts["runaway share"] == ("-0.980", "better")
    # 3.0 -> about 1: lower, and closer to 1; the verdict names the interval it reads
    assert re.fullmatch(r"lower; distance to 1: better, -[\d.]+\.\.-[\d.]+", verdicts["length ratio (best 1)"][1])
    assert verdicts["title echo or empty"] == ("+0.000", "no clear change")
    against = "against `HEAD~1`:" if base_has_health else "tuned against base model in this revision"
    assert against in health and health.index("- runaway share") < report.index("###")
    assert HEALTH_NOTE in report and VERDICT.findall(report)[0][0] == "ROUGE-L"  # quality verdicts unchanged
    table = [row for row in table_rows(report.split("### Output health, tuned vs base model")[1]) if row[0] == THIS]
    assert [row[1] for row in table] == list(verdicts) and table[0][2:4] == ["1.000", "0.020"]
    worst = report.split("### Worst outputs")[1].split("###")[0]
    rows = [line for line in worst.splitlines() if line.startswith("| yes")]
    assert len(rows) == 3 and all("| 0.900 |" in line for line in rows)
    for pattern in (r"@\w", r"#\d", r"\w://", r"www\.", r"(?<!\\)\$", "<b>", r"(?i)\bgh-\d", BIDI_CONTROL):
        assert not re.search(pattern, worst), pattern
    assert worst.count("&lt;b&gt;") >= 3  # escaped, not dropped


def test_runs_of_different_samples_get_an_unpaired_comparison_with_a_warning(repo, tmp_path):
    commit_scores(repo, score_rows(range(200), shift=0.1), "base branch")
    commit_scores(repo, score_rows(range(1000, 1150), shift=0.1), "another split")
    report = build_report(repo, tmp_path)
    assert "**Warning: not paired.**" in report and "(200 and 150;" in report
    assert len(VERDICT.findall(report)) == 3 and ", unpaired." in report
    assert "### Samples that changed most" not in report


def test_base_without_scores_gets_tuned_vs_base_of_this_revision(repo, tmp_path):
    commit_scores(repo, score_rows(range(100), shift=0.2), "first scores")
    root = sh(repo, "git", "rev-list", "--max-parents=0", "HEAD").stdout.strip()
    report = build_report(repo, tmp_path, base=root)
    assert f"`{root[:7]}` has no per-sample scores" in report
    assert VERDICT.findall(report)[0][3] == "better"  # the tuned model, 0.2 above the base model
    assert "eval\\_details.json" not in report.split("### Speed")[0].split("### Params")[1]  # shown with intervals


def test_speed_is_labelled_as_the_machine_s_and_intervals_say_what_they_cover(repo, tmp_path):
    from lorapipe.reporting.report import INTERVALS_NOTE, SPEED_NOTE

    rows = score_rows(range(50), shift=0.1)
    for tokens_per_s, message in ((13.7, "base branch on a loaded machine"), (71.7, "pull request, idle machine")):
        (repo / "metrics").mkdir(exist_ok=True)
        (repo / TRAIN_DETAILS).write_text(json.dumps({"tokens_per_s": tokens_per_s, "val_loss": 2.0}))
        commit_scores(repo, rows, message)
    report = build_report(repo, tmp_path)
    speed = report.split("### Speed and memory\n\n")[1].split("###")[0]
    assert speed.startswith(SPEED_NOTE) and "| metrics/train\\_details.json: tokens\\_per\\_s | 13.7 | 71.7 |" in speed
    assert "machine" in SPEED_NOTE and "load" in SPEED_NOTE
    verdict = report.split("###")[0]
    assert INTERVALS_NOTE in verdict and "not seed-to-seed variance" in INTERVALS_NOTE


def experiment_rev(repo: Path, name: str) -> str:
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    return next(run["rev"] for exp in shown[1]["experiments"] for run in exp["revs"] if run["name"] == name)


def committed_scores(repo: Path, rev: str) -> list[dict]:
    """EVAL_SCORES as the commit `rev` holds it (an experiment's results live in its commit only)."""
    return [json.loads(line) for line in sh(repo, "git", "show", f"{rev}:{EVAL_SCORES}").stdout.splitlines()]


@pytest.mark.slow
def test_report_of_two_real_experiments_overlays_their_curves_and_imports_no_torch(readme_flow, tmp_path, monkeypatch):
    """The workspace holds the sweep's lora.r=4 run; the base is the lora.r=8 experiment, by its name."""
    from lorapipe.reporting.compare import HEADLINE, run_vs_run

    repo, name = readme_flow.repo, readme_flow.experiments["8"]
    base = experiment_rev(repo, name)
    out = ("-o", str(tmp_path / "report.md"), "--summary", str(tmp_path / "summary.md"))
    command = (sys.executable, "-X", "importtime", "-m", "lorapipe.reporting.report", "--base", name, *out)
    result = sh(repo, *command)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "lorapipe.reporting.compare" in imported and "torch" not in imported  # the report job needs no torch

    report = (tmp_path / "report.md").read_text()
    assert report.startswith(f"## lorapipe report: experiment `{readme_flow.experiments['4']}` on ")
    assert report.splitlines()[0].endswith(f" vs experiment `{name}` ({base[:7]})")
    # The named experiment's scores are the old side, the workspace's the new: each line as compare.py makes it.
    old = committed_scores(repo, base)
    new = [json.loads(line) for line in (repo / EVAL_SCORES).read_text().splitlines()]
    expected = [f"- {run_vs_run(old, new, metric).line()}" for metric in HEADLINE]
    assert [line for line in report.splitlines() if VERDICT.match(line)] == expected
    assert f"Tuned model, this revision against `{name}`, paired over the 4 test samples both scored." in report
    # lora.r changed, the data did not: one line above the verdict, no Data section.
    unchanged = "\nData unchanged: same hashes for raw, clean, sample, split, tokenized.\n"
    assert unchanged in report.split("- ROUGE-L")[0] and "### Data" not in report
    assert "![loss curves, both revisions](./report_images/loss.png)" in report
    for image in ("loss.png", "scores.png"):
        assert (tmp_path / "report_images" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The loss chart draws train and validation loss of both revisions: the rows `dvc plots diff` reads.
    plots = json.loads(sh(repo, "dvc", "plots", "diff", base, "--targets", *LOSS_LOGS, "--json").stdout)["data"]
    with monkeypatch.context() as m:
        m.chdir(repo)
        logs = {rev: loss_logs(None if rev == "workspace" else rev) for rev in ("workspace", base)}
        params = params_diff(base, None)
    for path in LOSS_LOGS:
        points = [p for entry in plots[path] if entry["type"] == "vega" for p in entry["content"]["data"]["values"]]
        for rev, read in logs.items():
            assert read[path] and [{k: p[k] for k in read[path][0]} for p in points if p["rev"] == rev] == read[path]
    values = loss_spec([(THIS, logs["workspace"]), (name, logs[base])])["data"]["values"]
    curves = {(v["run"], v["curve"]) for v in values}
    assert curves == {(run, curve) for run in (THIS, name) for curve in ("train", "validation")}

    # The Params table: what `dvc params diff` finds changed, with the values it reads.
    dvc_params = json.loads(sh(repo, "dvc", "params", "diff", base, "--json").stdout)
    assert params == dvc_params
    sections = {part.split("\n")[0]: part for part in report.split("### ")[1:]}
    assert "| params.yaml: lora.r | 8 | 4 |" in sections["Params"]
    assert "trainable\\_params" in sections["Speed and memory"] and "val\\_loss" in sections["Metrics"]
    assert "trainable" not in sections["Metrics"] and "eval\\_details.json" not in sections["Metrics"]
    summary = (tmp_path / "summary.md").read_text()
    assert "](./" not in summary and summary.count("not shown in a job summary") == 2


@pytest.mark.slow
def test_report_of_an_experiment_not_in_the_workspace_against_the_branch(readme_flow, tmp_path):
    """`--run` names an experiment whose results are in DVC's experiment refs only, as a queued one's are once it
    ran (the workspace holds another run, lora.r=4): the report is of that experiment, against the branch."""
    from lorapipe.reporting.compare import HEADLINE, run_vs_run

    repo, name = readme_flow.repo, readme_flow.experiments["32"]
    rev = experiment_rev(repo, name)
    sh(
        repo,
        sys.executable,
        "-m",
        "lorapipe.reporting.report",
        "--run",
        name,
        "--base",
        "demo",
        "-o",
        str(tmp_path / "report.md"),
    )
    report = (tmp_path / "report.md").read_text()
    demo = sh(repo, "git", "rev-parse", "--short", "demo").stdout.strip()
    assert report.splitlines()[0] == f"## lorapipe report: experiment `{name}` ({rev[:7]}) vs `demo` ({demo})"
    eval_run = json.loads(sh(repo, "git", "show", f"{rev}:metrics/eval_run.json").stdout)
    assert f"MLflow run `{eval_run['mlflow_run_id']}`" in report  # the experiment's run, not the workspace's
    # The branch's scores are the old side, the experiment's commit's the new.
    old, new = committed_scores(repo, "demo"), committed_scores(repo, rev)
    expected = [f"- {run_vs_run(old, new, metric).line()}" for metric in HEADLINE]
    assert [line for line in report.splitlines() if VERDICT.match(line)] == expected
    sections = {part.split("\n")[0]: part for part in report.split("### ")[1:]}
    assert "| params.yaml: lora.r | 16 | 32 |" in sections["Params"]
    shown = [row[3] for row in table_rows(sections["Samples (base vs tuned)"])]
    for samples, same in (
        (sh(repo, "git", "show", f"{rev}:{EVAL_SAMPLES}").stdout, True),
        ((repo / EVAL_SAMPLES).read_text(), False),
    ):
        assert (shown == [escape_cell(json.loads(line)["tuned"]) for line in samples.splitlines()]) is same


@pytest.mark.slow
def test_report_renders_with_its_charts_in_a_browser(readme_flow, browser, tmp_path):
    """The comment as GitHub would show it (markdown-it's CommonMark with tables), both charts loaded."""
    from lorapipe.reporting.browser import comment_page, full_page_screenshot

    build_report(readme_flow.repo, tmp_path, "demo")
    shot = full_page_screenshot(browser, comment_page(tmp_path / "report.md").as_uri(), tmp_path / "report.png")
    images = browser.execute_script("return [...document.images].map(i => i.naturalWidth)")
    assert len(images) == 2 and all(width > 500 for width in images)
    assert shot.stat().st_size > 20_000


def test_report_shows_old_new_and_delta(repo):
    commit_metrics(repo, 0.30, 16, "first")
    commit_metrics(repo, 0.45, 8, "second")
    (repo / EVAL_SAMPLES).write_text(  # blank lines are skipped
        "\n" + json.dumps({"title": "Mug", "reference": "A mug.", "base": "Hmm", "tuned": "A fine mug."}) + "\n\n"
    )
    sh(repo, sys.executable, "-m", "lorapipe.reporting.report", "--base", "HEAD~1", "-o", "report.md")
    report = (repo / "report.md").read_text()
    row = next(line for line in report.splitlines() if "tuned.rougeL" in line)
    assert [c.strip() for c in row.strip("|").split("|")][1:] == ["0.3", "0.45", "+0.15"]
    params_row = next(line for line in report.splitlines() if "lora.r" in line)
    assert "16" in params_row and "8" in params_row
    assert "| Mug | A mug. | Hmm | A fine mug. |" in report


def test_report_without_changes_says_so(repo):
    out = subprocess.run(
        [sys.executable, "-m", "lorapipe.reporting.report", "--base", "HEAD", "-o", "same.md"],
        cwd=repo,
        capture_output=True,
    )
    assert out.returncode == 0
    assert "No changes." in (repo / "same.md").read_text()


SCORES = {"rouge1": 0.1, "rouge2": 0.1, "rougeL": 0.1, "bleu": 1.0, "loss": 2.0, "tokens": 3, "bleu_stats": [1] * 10}
BAD_LINES = {
    "not-json": (EVAL_SAMPLES, '{"title": "ok"}\n\n{"title": \n', f"{EVAL_SAMPLES.name} line 3: not valid JSON"),
    "not-an-object": (EVAL_SCORES, "\n[1, 2]\n", f"{EVAL_SCORES.name} line 2: expected a JSON object, got list"),
    "no-scores": (
        EVAL_SCORES,
        json.dumps({"id": "a", "base": SCORES, "tuned": {**SCORES, "rougeL": "high"}}),
        f"{EVAL_SCORES.name} line 1: missing or of the wrong type: tuned.rougeL",
    ),
    # Python's json reads NaN and Infinity; they, bools and ints beyond a float would become verdicts or overflow.
    "nan": (
        EVAL_SCORES,
        json.dumps({"id": "a", "base": SCORES, "tuned": {**SCORES, "rougeL": float("nan")}}),
        f"{EVAL_SCORES.name} line 1: not valid JSON (NaN is not a JSON number)",
    ),
    "infinity": (
        EVAL_SCORES,
        "\n" + json.dumps({"id": "a", "base": {**SCORES, "loss": -float("inf")}, "tuned": SCORES}),
        f"{EVAL_SCORES.name} line 2: not valid JSON (-Infinity is not a JSON number)",
    ),
    "bool": (
        EVAL_SCORES,
        json.dumps({"id": "a", "base": SCORES, "tuned": {**SCORES, "rougeL": True, "bleu_stats": [True] * 10}}),
        f"{EVAL_SCORES.name} line 1: missing or of the wrong type: tuned.rougeL, tuned.bleu_stats",
    ),
    # Output health is all or nothing (a file from before it has none), and each field has its type.
    "health-types": (
        EVAL_SCORES,
        json.dumps({"id": "a", "base": SCORES, "tuned": {**SCORES, "runaway": "yes", "unsupported_figures": [5]}}),
        f"{EVAL_SCORES.name} line 1: missing or of the wrong type: tuned.runaway, tuned.repeat4, tuned.echo, "
        "tuned.length_ratio, tuned.unsupported_figures",
    ),
    "huge-int": (
        EVAL_SCORES,
        json.dumps({"id": "a", "base": {**SCORES, "tokens": 10**400, "bleu_stats": [10**400] * 10}, "tuned": SCORES}),
        f"{EVAL_SCORES.name} line 1: missing or of the wrong type: base.tokens, base.bleu_stats",
    ),
}


# What each tool reads, and its output option; the summary reads only the scores.
TOOLS = {
    "lorapipe.reporting.report": ((EVAL_SAMPLES, EVAL_SCORES), ["--base", "HEAD", "-o"]),
    "lorapipe.reporting.results_page": ((EVAL_SAMPLES, EVAL_SCORES), ["-o"]),
    "lorapipe.reporting.summary": ((EVAL_SCORES,), []),
}
CASES = [(tool, case) for tool, (reads, _) in TOOLS.items() for case, (name, *_) in BAD_LINES.items() if name in reads]


@pytest.mark.parametrize(("tool", "case"), CASES, ids=[f"{t.split('.')[1]}-{c}" for t, c in CASES])
def test_malformed_sample_lines_are_one_error_line(repo, tmp_path, tool, case):
    name, text, message = BAD_LINES[case]
    commit_metrics(repo, 0.3, 16, "metrics to show")
    path = repo / name
    before = path.read_bytes() if path.exists() else None
    path.write_text(text)
    args = TOOLS[tool][1] + ([str(tmp_path / "out")] if TOOLS[tool][1] else [])
    try:
        result = subprocess.run([sys.executable, "-m", tool, *args], cwd=repo, capture_output=True, text=True)
    finally:
        path.write_bytes(before) if before is not None else path.unlink()
    assert_one_line_error(result, f"metrics/{message}")


def test_an_eval_run_record_nested_thousands_deep_is_one_error_line(tmp_path):
    """eval_run.json is read like the details files: JSON too deep for Python's parser is an error line too."""
    from lorapipe.core.cli import UserError
    from lorapipe.eval.eval_files import read_eval_run

    path = tmp_path / "eval_run.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError) as refused:
        read_eval_run(None, path)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(f"{path}: not valid JSON")


def test_model_output_cannot_inject_markdown_or_html():
    evil = "<img src=x onerror=alert(1)> [click](http://evil.example) ![x](http://t.example/p.png) | col\n## Heading"
    table = samples_table([{"title": "t", "reference": "r", "base": evil, "tuned": "`code` *b*"}])
    body = table.splitlines()[-1]
    assert "<img" not in body and "&lt;img" in body
    assert "](" not in body.replace("\\](", "").replace("\\(", "")  # no live link syntax left
    assert body.count(" | ") == 3  # the pipe in the text did not add a column
    assert "\n" not in escape_cell("a\nb") and escape_cell("`x`") == "\\`x\\`"


def test_model_output_cannot_mention_reference_link_or_typeset(tmp_path):
    """What GitHub turns into actions in plain text: notifications, cross-references, autolinks, math."""
    cell = escape_cell(HOSTILE + " WWW.Evil.example https://x.example/#frag")
    for pattern in (r"@\w", r"#\w", r"\w://", r"(?i)www\.", r"(?<!\\)\$", "<b>", r"(?i)\bgh-\d", BIDI_CONTROL):
        assert not re.search(pattern, cell), (pattern, cell)
    assert "GH\u200b-123" in cell and "\ufffdcod.exe\ufffd" in cell  # readable, and in the order stored
    assert not re.search(BIDI_CONTROL, code("\u202eexe.txt") + results_cell("\u2067x"))
    assert cell.replace("\u200b", "").replace("\\$", "$").startswith("@octocat see #1 and org/repo#2 at http://")
    assert escape_cell("x" * 500).endswith("x…") and len(escape_cell("x" * 500)) == 401


def test_control_characters_and_credentials_in_model_output_are_shown_not_written():
    """A NUL, an ANSI escape, DEL and C1 controls a model wrote, and a URL with a token: every cell of the
    report (and so its job summary) and of the results page shows them as U+FFFD, or redacted."""
    from lorapipe.reporting.results_page import samples_table as page_samples

    written = "a\x00b \x1b[31mred\x7f \x85c\x08d\x0c at https://shop.example/p?sessionid=tok123456"
    sample = {"title": written, "reference": "r", "base": "b", "tuned": written}
    for shown in (escape_cell(written), code(written, 200), results_cell(written), samples_table([sample])):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", shown), repr(shown)
        assert "\ufffd" in shown and "tok123456" not in shown
    page = page_samples([sample])
    assert page.count("a\ufffdb \ufffd[31mred\ufffd \ufffdc\ufffdd\ufffd at https://shop.example/p") == 2


def test_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    result = subprocess.run([actionlint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_least_privilege_and_fork_safe():
    for path in WORKFLOWS:
        text = path.read_text()
        flow = yaml.safe_load(text)
        assert "permissions" in flow, f"{path.name}: no top-level permissions"
        assert "pull_request_target" not in text, path.name
        # Untrusted PR text must never be expanded inside a shell script.
        assert "github.event.pull_request.title" not in text and "github.event.pull_request.body" not in text
        assert "write-all" not in text
    report = yaml.safe_load((ROOT / ".github/workflows/report.yml").read_text())
    comment = report["jobs"]["report"]["steps"][-1]
    assert "head.repo.full_name == github.repository" in comment["if"]


EVAL_RESULT = {
    "base": {"bleu": 5.0, "rouge1": 0.3, "rouge2": 0.1, "rougeL": 0.2, "perplexity": 7.389},
    "tuned": {"bleu": 5.0, "rouge1": 0.3, "rouge2": 0.1, "rougeL": 0.31234, "perplexity": 7.389},
    "samples": 200,
}


@pytest.mark.parametrize("per_sample", [True, False], ids=["with-per-sample-scores", "record-only"])
def test_summary_and_model_card_print_one_scores_table(tmp_path, per_sample):
    from lorapipe.core.params import EvalParams, LoraParams, QuantParams, TrainParams
    from lorapipe.model.decoding import decoding_record
    from lorapipe.reporting.model_card import BaseOrigin, CardFacts, model_card
    from lorapipe.train.training_record import TrainingRecord

    (tmp_path / "metrics").mkdir()
    (tmp_path / EVAL_DETAILS).write_text(json.dumps(EVAL_RESULT))
    if per_sample:
        rows = score_rows(range(200), shift=0.1)
        (tmp_path / EVAL_SCORES).write_text("".join(json.dumps(r) + "\n" for r in rows))
    printed = sh(tmp_path, sys.executable, "-m", "lorapipe.reporting.summary").stdout  # metrics/eval_details.json
    table = {cells[0]: cells[1:] for cells in table_rows(printed)}
    assert list(table) == ["ROUGE-L", "BLEU", "perplexity", "ROUGE-1", "ROUGE-2"]  # headline metrics first
    assert table["ROUGE-L"][:3] == ["0.200", "0.312", "+0.112"]  # the record's scores, to ROUGE-L's decimals
    assert "Output health" not in printed  # a record from before output health: the quality table alone
    assert table["BLEU"][:3] == ["5.00", "5.00", "+0.00"]
    assert printed.rstrip().endswith("(200 test samples; BLEU 0-100, ROUGE F1 0-1, lower perplexity is better)")
    if per_sample:
        assert table["ROUGE-L"][3].endswith("(better)") and table["BLEU"][3] == "+0.00..+0.00 (no clear change)"
        return
    assert len(table["ROUGE-L"]) == 3  # no interval column without per-sample scores
    origin = BaseOrigin.from_record({"kind": "gguf", "name": "base.gguf"})
    card = dict(repo_id="you/x", merged=True, base=None, origin=origin, params={}, trained_at="at commit `c`")
    card |= dict(trained=TrainingRecord(params_of(TrainParams), params_of(LoraParams), params_of(QuantParams)))
    card |= dict(
        decoding=decoding_record(params_of(EvalParams)),
        chat_template=False,
        prompt_example="",
        download={},
        license="mit",
    )
    facts = CardFacts(**card, scores=EVAL_RESULT)
    card_table = model_card(facts).split("## Results")[1].split("##")[0]
    assert printed.split("\n(")[0] in card_table  # the card shows the very table the summary prints


def test_summary_prints_output_health_in_a_table_of_its_own(tmp_path):
    (tmp_path / "metrics").mkdir()
    rows = with_health(score_rows(range(200), shift=0.1))
    (tmp_path / EVAL_SCORES).write_text("".join(json.dumps(r) + "\n" for r in rows))
    health = {"runaway": 1.0, "repeat4": 0.6, "distinct2": 0.01, "length_ratio": 3.0, "unsupported": 1.0, "echo": 0.0}
    healthy = {**health, "runaway": 0.0, "repeat4": 0.0, "distinct2": 0.02, "length_ratio": 1.0, "unsupported": 0.0}
    result = {**EVAL_RESULT, "base": {**EVAL_RESULT["base"], **health}, "tuned": {**EVAL_RESULT["tuned"], **healthy}}
    (tmp_path / EVAL_DETAILS).write_text(json.dumps(result))
    printed = sh(tmp_path, sys.executable, "-m", "lorapipe.reporting.summary").stdout
    quality, health_part = printed.split("Output health")
    assert "runaway" not in quality and table_rows(quality)[0][0] == "ROUGE-L"
    table = {cells[0]: cells[1:] for cells in table_rows(health_part)}
    assert list(table) == HEALTH_LABELS
    assert table["runaway share"][:3] == ["1.000", "0.000", "-1.000"] and table["runaway share"][3].endswith("(better)")
    assert table["length ratio (best 1)"][3].endswith("(lower; distance to 1: better, -2.000..-2.000)")
    assert table["distinct-2"][0] == "0.010"
    assert printed.rstrip().endswith(HEALTH_NOTE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "metrics/eval_details.json not found"),
        ("{", "not valid JSON"),
        ('{"base": 1}', "no base and tuned scores"),
    ],
)
def test_summary_of_a_missing_or_broken_eval_record_is_one_error_line(tmp_path, text, message):
    if text is not None:
        (tmp_path / "metrics").mkdir()
        (tmp_path / EVAL_DETAILS).write_text(text)
    result = sh(tmp_path, sys.executable, "-m", "lorapipe.reporting.summary", check=False)
    assert_one_line_error(result, message)
