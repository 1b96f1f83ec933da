"""The Gradio demo app in a real headless browser, on the models of the README flow (a real, shortened demo run)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.browser import save_screenshot
from tests.workspace import ROOT, assert_one_line_error, child_env, free_port, wait_for, write_params


def start_app(repo, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), *args],
        cwd=repo,
        env=child_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_type_a_title_and_read_base_and_tuned_as_evaluate_decoded_them_on_the_experiment_the_page_names(
    readme_flow, browser, tmp_path
):
    """The workspace holds the sweep's lora.r=4 run: the page names its experiment, a title typed in a browser gets
    the texts evaluate decoded for it, and --share reaches Gradio."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    process = start_app(readme_flow.repo, port, "--share")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, timeout=180, proc=process, every=1)
        # While Gradio tries for a share link, it serves every page with its scripts from its CDN; where the
        # network drops connections (not refuses them) that try lasts 30 s and a page opened then stays blank.
        output = read_until(process, "share link", timeout=120)
        with urllib.request.urlopen(url + "config", timeout=30) as response:
            page = json.dumps(json.loads(response.read()))
        # A title the evaluate stage decoded with the same params: the app must show the same texts.
        sample = json.loads((readme_flow.repo / "metrics/eval_samples.jsonl").read_text().splitlines()[0])
        browser.get(url)
        wait = WebDriverWait(browser, 180)
        title = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#title textarea"))
        title.send_keys(sample["title"])
        browser.find_element(By.ID, "describe").click()

        def outputs(driver):
            texts = [driver.find_element(By.CSS_SELECTOR, f"#{side}-output textarea") for side in ("base", "tuned")]
            values = [t.get_property("value") for t in texts]
            return values if all(values) else False

        base, tuned = wait.until(outputs)
        shot = save_screenshot(browser, tmp_path / "app.png")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert (base, tuned) == (sample["base"], sample["tuned"])
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    experiment = readme_flow.experiments["4"]
    assert f"experiment `{experiment}`" in page and "lora.r 4" in page and "quant.bits 4" in page
    assert "serving models/trained" in output
    assert "Could not create share link" in output  # Gradio tried for a public link; this machine is offline


def read_until(process: subprocess.Popen, text: str, timeout: float) -> str:
    """The process's output so far, read until `text` shows up or `timeout` passes.

    Reads the pipe's file descriptor itself: a buffered reader would hold lines that select cannot see.
    """
    fd, seen, deadline = process.stdout.fileno(), "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
    return seen


def test_missing_models_is_a_one_line_error(tmp_path):
    write_params(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--models", "nothing-here"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
    )
    assert_one_line_error(result, "nothing-here/base: not found", "make demo")
