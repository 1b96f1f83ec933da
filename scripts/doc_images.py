"""docs/images/report.png and results.png from the demo's own run (`make doc-images`, after `make demo`).

The pictures show what a user sees: the demo's baseline (12 steps on SmolLM2) against one experiment
(`-S lora.r=8`, run once with `dvc exp run --temp`, so the workspace keeps the baseline), the pull-request
report between the two, and the results page of both. Needs the dev extra and Debian's chromium."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.reporting.browser import chromium, comment_page, full_page_screenshot, has_chromium
from lorapipe.workspace.demo import BRANCH

EXPERIMENT, CHANGE = "doc-r8", "lora.r=8"
IMAGES = Path("docs/images")


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"{' '.join(args[:3])} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def main() -> None:
    if not has_chromium():
        raise UserError("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    if subprocess.run(["git", "rev-parse", "-q", "--verify", BRANCH], capture_output=True).returncode != 0:
        raise UserError(f"no `{BRANCH}` branch here: run `make demo` first")
    if EXPERIMENT not in run("dvc", "exp", "list", "--name-only").split():
        log.info(f"running the experiment the pictures compare: dvc exp run --temp -n {EXPERIMENT} -S {CHANGE}")
        run("dvc", "exp", "run", "--temp", "-q", "-n", EXPERIMENT, "-S", CHANGE)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        report = work / "report.md"
        run("lorapipe.reporting.report", "--base", BRANCH, "--run", EXPERIMENT, "-o", str(report))
        results = work / "results/index.html"
        run("lorapipe.reporting.results_page", "-o", str(results))
        driver = chromium(work / "chromium-profile")
        try:
            for page, name in ((comment_page(report), "report.png"), (results, "results.png")):
                full_page_screenshot(driver, page.as_uri(), IMAGES / name)
                log.info(f"wrote {IMAGES / name}")
        finally:
            driver.quit()


if __name__ == "__main__":
    run_cli(main)
