"""Build the pull-request report: metric and param diffs against a base revision, loss curve, samples.

    python -m lorapipe.report --base origin/main -o report.md
    cml comment create --watermark-title="lorapipe report" report.md

Model outputs are untrusted text: every sample is escaped so it cannot inject markdown, HTML
or links into the comment.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
from pathlib import Path

SAMPLES = Path("metrics/eval_samples.jsonl")
LOSS_CURVE = Path("metrics/loss_curve.png")
# Inside a table cell only these can start markup (links and images need `[`).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]|~])")


def escape_cell(text: str, limit: int = 400) -> str:
    """Text safe inside a markdown table cell: no HTML, no markdown syntax, no row breaks."""
    text = text if len(text) <= limit else text[:limit] + "…"
    text = html.escape(text, quote=True)
    text = _MARKDOWN.sub(r"\\\1", text)
    return " ".join(text.split())  # newlines would end the table row


def dvc_json(*args: str) -> dict:
    out = subprocess.run(["dvc", *args, "--json"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"error: dvc {' '.join(args)} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout or "{}")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else escape_cell(str(value), 80)


def diff_table(diff: dict, title: str, with_delta: bool) -> str:
    """Markdown table of a `dvc metrics/params diff --json` result: old, new (and delta)."""
    rows = []
    for path, entries in sorted(diff.items()):
        for key, change in sorted(entries.items()):
            old, new = change.get("old"), change.get("new")
            delta = change.get("diff")
            cells = [escape_cell(f"{path}: {key}", 120), _fmt(old), _fmt(new)]
            if with_delta:
                cells.append(f"{delta:+.4g}" if isinstance(delta, (int, float)) else "—")
            rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return f"### {title}\n\nNo changes.\n"
    header = "| | old | new | delta |\n|---|---:|---:|---:|" if with_delta else "| | old | new |\n|---|---|---|"
    return f"### {title}\n\n{header}\n" + "\n".join(rows) + "\n"


def samples_table(path: Path, count: int) -> str:
    if not path.is_file():
        return ""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:count]
    lines = ["### Samples (base vs tuned)\n", "| title | reference | base | tuned |", "|---|---|---|---|"]
    for r in rows:
        lines.append(
            "| " + " | ".join(escape_cell(str(r.get(k, ""))) for k in ("title", "reference", "base", "tuned")) + " |"
        )
    return "\n".join(lines) + "\n"


def build_report(base: str, samples: int) -> str:
    parts = [f"## lorapipe report (vs `{escape_cell(base, 60)}`)\n"]
    parts.append(diff_table(dvc_json("metrics", "diff", base), "Metrics", with_delta=True))
    parts.append(diff_table(dvc_json("params", "diff", base), "Params", with_delta=False))
    if LOSS_CURVE.is_file():
        parts.append(f"### Loss curve\n\n![loss curve](./{LOSS_CURVE})\n")
    parts.append(samples_table(SAMPLES, samples))
    return "\n".join(p for p in parts if p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, default=Path("report.md"))
    args = parser.parse_args(argv)
    args.output.write_text(build_report(args.base, args.samples))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
