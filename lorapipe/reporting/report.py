"""Build the pull-request report: a verdict per headline metric with its 95% interval, then the evidence.

    python -m lorapipe.reporting.report --base origin/main -o report.md --summary summary.md
    python scripts/post_report.py report.md     # in report.yml: one PR comment, through CML or GitHub's API
    python -m lorapipe.reporting.report --base main --run r8   # an experiment (queued or not) against main

It compares the run (`--run`: the workspace unless named) against the base revision (`--base`), each a
branch, tag, sha, experiment name or `workspace` (lorapipe.core.vcs.resolve_revision). It opens with what
changed in the data (lorapipe.reporting.data_changes; one line when nothing did), then one line per
headline metric (better / worse / no clear change) for the run's tuned model against the base revision's,
resampled over the test samples both scored
(lorapipe.reporting.compare). Then: tuned vs base model in both revisions, both revisions' loss curves on
one chart and their score bars (PNG files beside the report, which scripts/post_report.py uploads),
the samples whose score changed most, the params that changed, training metrics, and speed and
memory on their own. A job summary cannot show the runner's files and a fork's read-only token
cannot upload them: `--summary` writes the same report with each image replaced by a line that
says so, and with the Data section's full lists (every count, every example found).

Model outputs are untrusted text: every sample is escaped so that it cannot inject markdown,
HTML or links, nor mention people or reference issues. Imports no torch: the report job is light.
"""

from __future__ import annotations

import argparse
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapipe.core.artifacts import EVAL_DETAILS, EVAL_SCORES
from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.credentials import redact, url_credentials
from lorapipe.core.metric_files import key_changes, records_diff
from lorapipe.core.params import PARAMS_FILE, flatten, parse_yaml
from lorapipe.core.vcs import WORKSPACE, Revision, git, named_at, read_file, resolve_revision
from lorapipe.eval.eval_files import has_health, read_eval_run, read_samples, read_scores
from lorapipe.reporting import data_changes
from lorapipe.reporting.charts import loss_logs, loss_spec, png, scores_spec
from lorapipe.reporting.compare import HEADLINE, HEALTH, METRICS, pair_up, run_vs_run, tuned_vs_base
from lorapipe.reporting.scores_table import HEALTH_NOTE, ScoreRow, markdown_table, score_rows

THIS = "this revision"  # the workspace, as the report names it
SAMPLE_COLUMNS = ("title", "reference", "base", "tuned")  # an eval_samples.jsonl row's texts, as tables show them
# Inside a table cell only these can start markup (links and images need `[`; `$` starts math).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]|~$])")
# What GitHub turns into actions in plain text: @mentions (and e-mail links), #1, org/repo#2 and
# GH-1 references, scheme:// links and www. hosts. A zero-width space after the trigger keeps the
# text readable and inert.
_ACTIONS = re.compile(r"[@#]|(?<=\w)(?=://)|(?i:\bwww)(?=\.)|(?i:\bgh)(?=-\d)")
ZERO_WIDTH_SPACE = "\u200b"
# Characters shown as the replacement character instead: bidirectional controls (embeddings, overrides,
# isolates, marks), which reorder what a reader sees ("Trojan Source"), and control characters (C0 but tab
# and newline, DEL, C1: a NUL a model wrote), which a file or page must not hold as they are.
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# the training record's quality figures; every other key of it is speed, memory or size.
TRAINING_QUALITY = {"train_loss", "val_loss", "val_perplexity"}
# Why a speed change is no verdict: the two revisions ran on whatever machine was free, at whatever load.
SPEED_NOTE = (
    "Speed and memory depend on the machine each run had and on its load at the time (other jobs, a shared "
    "runner, CPU or GPU): a change here is not an effect of the params unless both ran on the same idle machine."
)
# What the 95% intervals measure, and what they leave out.
INTERVALS_NOTE = (
    "The intervals cover test-sample noise (which test samples were drawn), not seed-to-seed variance: "
    "retraining with another seed can move the scores further."
)
IMAGE_MISSING = (
    "*{alt}: not shown in a job summary, which cannot display files from the runner (and a fork's "
    "read-only token cannot upload them); see the pull-request comment, or build the report "
    "locally with `python -m lorapipe.reporting.report`.*"
)


def visible_text(text: str) -> str:
    """`text` as the report, its job summary and the results page show it: credentials redacted
    (lorapipe.core.credentials.redact), each bidirectional or control character replaced by U+FFFD, so it
    reads in the order it is stored and nothing in it is invisible."""
    return _UNSHOWN.sub("\ufffd", redact(text))


def shorten(text: str, limit: int = 400) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut (the report's and results page's cells)."""
    return text if len(text) <= limit else text[:limit] + "…"


def escape_cell(text: str, limit: int = 400) -> str:
    """Text safe inside a markdown table cell: no HTML, markdown, math, links, mentions, references,
    credentials, bidirectional or control characters, or row breaks."""
    text = _ACTIONS.sub(lambda m: m.group(0) + ZERO_WIDTH_SPACE, shorten(visible_text(text), limit))  # before `&#x27;`
    text = html.escape(text, quote=True)
    text = _MARKDOWN.sub(r"\\\1", text)
    return " ".join(text.split())  # newlines would end the table row


def code(text: str, limit: int = 60) -> str:
    """`text` as an inline code span: shown verbatim, so nothing in it renders or notifies."""
    return "`" + " ".join(shorten(visible_text(text), limit).replace("`", "'").split()) + "`"


def rev_label(rev: str) -> str:
    """A revision as a reader names it: a full commit sha shortened like git does; a branch, a short sha
    or `workspace` as given."""
    return rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev


def side_label(rev: Revision) -> str:
    """A side of the comparison as the report names it: this revision (the workspace), the experiment's
    name, or the branch, tag or sha as given."""
    return THIS if rev.commit is None else rev.experiment or rev_label(rev.name)


def named(label: str) -> str:
    """A side's label in a sentence: this revision as words, any other as code (what the user typed)."""
    return label if label == THIS else code(label)


def markdown_row(cells: Iterable[str]) -> str:
    """`| a | b |`: one row of a markdown table, of cells already escaped."""
    return "| " + " | ".join(cells) + " |"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else escape_cell(str(value), 80)


def diff_table(diff: dict, title: str, with_delta: bool, note: str = "") -> str:
    """Markdown table of a `dvc metrics/params diff --json` result: old, new (and delta); `note` under the title."""
    rows = []
    for path, entries in sorted(diff.items()):
        for key, change in sorted(entries.items()):
            old, new = change.get("old"), change.get("new")
            delta = change.get("diff")
            cells = [escape_cell(f"{path}: {key}", 120), _fmt(old), _fmt(new)]
            if with_delta:
                cells.append(f"{delta:+.4g}" if isinstance(delta, (int, float)) else "—")
            rows.append(markdown_row(cells))
    heading = f"### {title}\n\n" + (f"{note}\n\n" if note else "")
    if not rows:
        return f"{heading}No changes.\n"
    header = "| | old | new | delta |\n|---|---:|---:|---:|" if with_delta else "| | old | new |\n|---|---|---|"
    return f"{heading}{header}\n" + "\n".join(rows) + "\n"


def params_diff(old_rev: str | None, new_rev: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """Every params.yaml key that differs between two revisions (None: the workspace), in the shape of `dvc
    params diff --json` ({params.yaml: {dotted key: {"old", "new", "diff"}}}) and parsed as DVC parses it: the
    whole file, as DVC diffs it, whether or not a stage reads the key."""
    changed = key_changes(*(_flat_params(rev) for rev in (old_rev, new_rev)))
    return {PARAMS_FILE: changed} if changed else {}


def _flat_params(rev: str | None) -> dict[str, Any]:
    path = Path(PARAMS_FILE)
    raw, source = read_file(rev, path), named_at(path, rev)
    tree = parse_yaml(raw.decode(errors="replace"), source) if raw is not None else {}
    if not isinstance(tree, dict):
        raise UserError(f"{source}: expected a mapping of sections (lora:, train:, ...)")
    return flatten(tree)


def split_metrics(diff: dict, old_scored: bool, new_scored: bool) -> tuple[dict, dict]:
    """The records' diff (metric_files.records_diff) as (quality, speed and memory). The scores are left out where the
    per-sample scores show them with intervals: both revisions have them, or only this one and the
    base has no value to show."""
    quality: dict[str, dict] = {}
    speed: dict[str, dict] = {}
    for path, entries in diff.items():
        for key, change in entries.items():
            name = key.split(".")[-1]
            if path == str(EVAL_DETAILS) and name in METRICS:
                shown = new_scored and (old_scored or change.get("old") is None)
                target = None if shown else quality
            else:
                target = quality if name in TRAINING_QUALITY else speed
            if target is not None:
                target.setdefault(path, {})[key] = change
    return quality, speed


def verdict(old: list[dict] | None, new: list[dict] | None, label: str, this: str = THIS) -> str:
    """The opening lines: one per headline metric, the run's (`this`) tuned model against the base revision's
    (`label`); then one per output-health metric, against the base revision's where it has them."""
    if new is None:
        return f"No per-sample scores in {named(this)} (`{EVAL_SCORES}`): run the evaluate stage.\n"
    if old is None:
        intro = (
            f"{named(label)} has no per-sample scores, so there is nothing to compare with: "
            f"tuned against base model in {named(this)}, over its {len(new)} test samples."
        )
        changes = [tuned_vs_base(new, name) for name in HEADLINE]
    else:
        changes = [run_vs_run(old, new, name) for name in HEADLINE]
        intro = f"Tuned model, {named(this)} against {named(label)}"
        if changes[0].paired:
            intro += f", paired over the {changes[0].samples} test samples both scored."
        else:
            intro = (
                f"> **Warning: not paired.** The two revisions scored different test samples ({len(old)} and "
                f"{len(new)}; another split, seed or sample set), so each is resampled on its own: the "
                "intervals are wider, and part of any change is the change of samples.\n\n" + intro + ", unpaired."
            )
    lines = "\n".join(f"- {c.line()}" for c in changes)
    return intro + "\n\n" + lines + "\n\n" + health_verdict(old, new, label, this) + f"{INTERVALS_NOTE}\n"


def health_verdict(old: list[dict] | None, new: list[dict], label: str, this: str = THIS) -> str:
    """The output-health lines: the run's tuned model against the base revision's when both have output
    health, else against the run's base model; nothing before output health existed."""
    if not has_health(new):
        return ""
    if old is not None and has_health(old):
        intro = f"Output health of the tuned model, {named(this)} against {named(label)}:"
        changes = [run_vs_run(old, new, name) for name in HEALTH]
    else:
        why = "has no output health" if old is not None else "has no per-sample scores"
        intro = f"Output health, tuned against base model in {named(this)} ({named(label)} {why}):"
        changes = [tuned_vs_base(new, name) for name in HEALTH]
    return f"{intro}\n\n" + "\n".join(f"- {c.line()}" for c in changes) + f"\n\n{HEALTH_NOTE}\n\n"


def tuned_vs_base_table(runs: list[tuple[str, list[ScoreRow]]], title: str = "Tuned vs base model") -> str:
    """Both revisions' base vs tuned model, metric by metric, each delta with its 95% interval."""
    rows = sorted((row for _, rows in runs for row in rows), key=lambda row: list(METRICS).index(row.metric))
    return f"### {title}\n\n{markdown_table(rows)}\n" if rows else ""


def changed_most(old: list[dict] | None, new: list[dict] | None, label: str, count: int, this: str = THIS) -> str:
    """The samples whose tuned ROUGE-L changed most between the revisions, both directions."""
    if not old or not new:
        return ""
    old_rows, new_rows, paired = pair_up(old, new)
    if not paired:
        return ""  # no sample was scored by both: the verdict's warning says so
    changes = [(n["tuned"]["rougeL"] - o["tuned"]["rougeL"], o, n) for o, n in zip(old_rows, new_rows, strict=True)]
    changes.sort(key=lambda change: change[0])
    picked = [c for c in changes[::-1][:count] if c[0] > 0] + [c for c in changes[:count] if c[0] < 0]
    if not picked:
        return "### Samples that changed most\n\nNo sample's tuned ROUGE-L changed.\n"
    lines = [
        f"### Samples that changed most (tuned ROUGE-L, {named(label)} -> {named(this)})\n",
        markdown_row(
            ["Δ ROUGE-L", "title", "reference", f"tuned, {escape_cell(label, 60)}", f"tuned, {escape_cell(this, 60)}"]
        ),
        "|---:|---|---|---|---|",
    ]
    for delta, o, n in picked:
        texts = (n["title"], n["reference"], o["tuned"]["text"], n["tuned"]["text"])
        lines.append(markdown_row([f"{delta:+.3f}", *(escape_cell(str(t)) for t in texts)]))
    return "\n".join(lines) + "\n"


def worst_outputs(rows: list[dict] | None, count: int, this: str = THIS) -> str:
    """The run's tuned outputs that ran away or repeat themselves most: what the health lines count."""
    if not rows or not has_health(rows):
        return ""
    ranked = sorted(rows, key=lambda row: (row["tuned"]["runaway"], row["tuned"]["repeat4"]), reverse=True)
    worst = [row for row in ranked[:count] if row["tuned"]["runaway"] or row["tuned"]["repeat4"] > 0]
    if not worst:
        return f"### Worst outputs\n\nNo tuned output of {named(this)} ran away or repeated a 4-gram.\n"
    lines = [
        f"### Worst outputs (tuned, {named(this)}: ran away, then most repeated 4-grams)\n",
        markdown_row(["runaway", "repeated 4-grams", "unsupported figures", "title", "tuned"]),
        "|---|---:|---|---|---|",
    ]
    for row in worst:
        tuned = row["tuned"]
        figures = escape_cell(", ".join(tuned["unsupported_figures"]), 80) or "—"
        flags = ["yes" if tuned["runaway"] else "no", f"{tuned['repeat4']:.3f}", figures]
        lines.append(markdown_row([*flags, escape_cell(str(row["title"])), escape_cell(str(tuned["text"]))]))
    return "\n".join(lines) + "\n"


def sample_texts(samples: list[dict]) -> list[list[str]]:
    """Each eval_samples.jsonl row's texts in SAMPLE_COLUMNS order, empty where one is missing: the cells of
    the report's samples table and the results page's, before each escapes them for its markup."""
    return [[str(sample.get(column, "")) for column in SAMPLE_COLUMNS] for sample in samples]


def samples_table(samples: list[dict]) -> str:
    """The samples as a markdown table; model outputs are untrusted text, so every cell is escaped."""
    if not samples:
        return ""
    lines = ["### Samples (base vs tuned)\n", markdown_row(SAMPLE_COLUMNS), "|---|---|---|---|"]
    lines += [markdown_row(map(escape_cell, texts)) for texts in sample_texts(samples)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Image:
    """A chart written beside the report; the summary names it instead of showing it."""

    alt: str
    path: str  # relative to the report


@dataclass(frozen=True)
class Brief:
    """A part in two lengths: what fits a pull-request comment, and the full lists for the job summary."""

    comment: str
    summary: str


def data_section(base: Revision, run: Revision, old: list[dict] | None, new: list[dict] | None) -> Brief:
    """What changed in the data (lorapipe.reporting.data_changes), the base revision against the run."""
    old_side = data_changes.read_side(base.commit, side_label(base), old)
    new_side = data_changes.read_side(run.commit, side_label(run), new)
    comment, summary = (data_changes.data_blocks(old_side, new_side, full=full) for full in (False, True))
    return Brief(data_changes.markdown(comment, escape_cell), data_changes.markdown(summary, escape_cell))


def describe(rev: Revision) -> str:
    """A side as the heading names it: the workspace by the experiment that last ran in it (if any) and its
    HEAD commit; an experiment by its name and short sha; a branch, tag or sha as given, with its short sha."""
    if rev.commit is None:
        subject = escape_cell(git("log", "-1", "--format=%s"), 80)
        head = f"{code(git('rev-parse', '--short', 'HEAD') or 'no commit')} {subject}"
        experiment = read_eval_run().get("experiment")
        if experiment:
            return f"experiment {code(str(experiment))} on {head}"
        # A run of edited, uncommitted params is not HEAD's: say so, or the header would name HEAD's commit
        return f"the workspace, with uncommitted changes, on {head}" if git("status", "--porcelain", "-uno") else head
    sha = git("rev-parse", "--short", rev.commit)
    if rev.experiment:
        return f"experiment {code(rev.experiment)} ({sha})"
    label = rev_label(rev.name)
    return code(label) + ("" if label == sha else f" ({sha})")


def heading(base: Revision, run: Revision) -> str:
    """What is compared with what: the run (experiment or commit) and its MLflow run, the base revision."""
    eval_run = read_eval_run(run.commit)
    lines = [f"## lorapipe report: {describe(run)} vs {describe(base)}\n"]
    url = str(eval_run.get("mlflow_run_url") or "")
    # A plain link, nothing in it can break out, and no credential in it
    if re.fullmatch(r"https?://[\w.:/#%?=&+~-]+", url) and not url_credentials(url):
        lines.append(f"[MLflow run]({url})\n")
    elif eval_run.get("mlflow_run_id"):
        lines.append(f"MLflow run {code(str(eval_run['mlflow_run_id']), 40)} (in a local store)\n")
    return "\n".join(lines)


def bar_scores(rows: list[ScoreRow]) -> dict[str, float]:
    """{"base.rougeL": ..., "tuned.rougeL": ...}, for the score bars."""
    return {f"{model}.{row.metric}": getattr(row, model) for row in rows for model in ("base", "tuned")}


def build_report(base: Revision, run: Revision, samples: int, images: Path) -> list[str | Image | Brief]:
    """The report's parts in order, `run` against `base`; charts are written into `images` as PNG."""
    old, new, label, this = read_scores(base.commit), read_scores(run.commit), side_label(base), side_label(run)
    sides = ((label, old), (this, new))
    runs = [(name, score_rows(samples=rows, run=escape_cell(name, 60))) for name, rows in sides if rows]
    health = [(name, score_rows(samples=rows, run=escape_cell(name, 60), health=True)) for name, rows in sides if rows]
    parts: list[str | Image | Brief] = [heading(base, run), data_section(base, run, old, new)]
    parts.append(verdict(old, new, label, this))
    parts.append(tuned_vs_base_table(runs))
    parts.append(tuned_vs_base_table(health, "Output health, tuned vs base model"))

    images.mkdir(parents=True, exist_ok=True)
    loss = loss_spec([(label, loss_logs(base.commit)), (this, loss_logs(run.commit))])
    bars = scores_spec([(name, bar_scores(rows)) for name, rows in runs]) if runs else None
    charts = [(loss, "loss.png", "loss curves, both revisions"), (bars, "scores.png", "base vs tuned, both revisions")]
    if loss or bars:
        parts.append("### Curves and scores\n")
    for spec, name, alt in charts:
        if spec:
            (images / name).write_bytes(png(spec))
            parts.append(Image(alt, f"{images.name}/{name}"))

    parts.append(changed_most(old, new, label, count=3, this=this))
    parts.append(worst_outputs(new, count=3, this=this))
    parts.append(diff_table(params_diff(base.commit, run.commit), "Params", with_delta=False))
    quality, speed = split_metrics(records_diff(base.commit, run.commit), bool(old), bool(new))
    parts.append(diff_table(quality, "Metrics", with_delta=True))
    parts.append(diff_table(speed, "Speed and memory", with_delta=True, note=SPEED_NOTE))
    parts.append(samples_table(read_samples(run.commit)[:samples]))
    return [p for p in parts if p]


def render(parts: list[str | Image | Brief], images: bool) -> str:
    """Markdown of the parts for the comment; without `images`, for the job summary: each image is a line
    saying why it is missing, and each part in two lengths is its full one."""
    out = []
    for part in parts:
        if isinstance(part, Brief):
            part = part.comment if images else part.summary
        elif isinstance(part, Image):
            part = f"![{part.alt}](./{part.path})\n" if images else IMAGE_MISSING.format(alt=part.alt) + "\n"
        out.append(part)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = "a branch, tag or sha, an experiment's name (one that ran from the queue too) or `workspace`"
    parser.add_argument("--base", default="main", help=f"what to compare with: {kinds} (default: main)")
    parser.add_argument(
        "--run",
        default=WORKSPACE,
        help=f"the run to report: {kinds} (default: workspace, the working tree and the results in it)",
    )
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, default=Path("report.md"))
    parser.add_argument("--summary", type=Path, help="also write the report for a job summary (no images)")
    args = parser.parse_args(argv)
    images = args.output.with_name(f"{args.output.stem}_images")
    base, run = resolve_revision(args.base), resolve_revision(args.run)  # an unknown name stops here
    parts = build_report(base, run, args.samples, images)
    args.output.write_text(render(parts, images=True))
    if args.summary:
        args.summary.write_text(render(parts, images=False))
    print(f"wrote {args.output}" + (f" and {args.summary}" if args.summary else ""))


if __name__ == "__main__":
    run_cli(main)
