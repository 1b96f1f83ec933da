"""A headless Chromium that renders the PR report and the results page, for the pictures in docs/images/
(`make doc-images`) and the tests that read those pages as a reader would. Needs the dev extra
(selenium, markdown-it-py) and Debian's chromium and chromium-driver."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

# Debian's packages by default; GitHub's runners point these at their preinstalled Chrome.
CHROMIUM = Path(os.environ.get("LORAPIPE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LORAPIPE_CHROMEDRIVER", "/usr/bin/chromedriver"))
# A pull-request comment as GitHub lays it out, near enough: its width, its table borders.
COMMENT_STYLE = (
    "body{font:14px system-ui;max-width:980px;margin:1rem} td,th{border:1px solid #d0d7de;padding:3px 6px}"
    " img{max-width:100%}"
)


def has_chromium() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def chromium(profile: Path) -> WebDriver:
    """Headless Chromium with its profile in `profile`; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # No background traffic: the machine may have no network, and Chromium would keep retrying.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def comment_page(markdown: Path) -> Path:
    """The report's markdown as GitHub renders a comment (CommonMark with tables), in an HTML file beside it."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown.read_text())
    page = markdown.with_suffix(".html")
    page.write_text(f"<!doctype html><meta charset=utf-8><style>{COMMENT_STYLE}</style>{body}")
    return page


def full_page_screenshot(driver: WebDriver, url: str, path: Path, width: int = 1024, max_height: int = 3000) -> Path:
    """`url` opened and shot whole (up to `max_height` pixels) into `path`."""
    driver.get(url)
    height = driver.execute_script("return document.body.scrollHeight") + 40
    driver.set_window_size(width, min(height, max_height))
    driver.save_screenshot(str(path))
    return path
