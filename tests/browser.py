"""The headless browser that tests of the app, the report and the results page drive (the fixture is
`browser` in tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Debian's packages by default; GitHub's runners point these at their preinstalled Chrome.
CHROMIUM = Path(os.environ.get("LORAPIPE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LORAPIPE_CHROMEDRIVER", "/usr/bin/chromedriver"))


def save_screenshot(driver, path: Path) -> Path:
    """Screenshot to `path`; also into $LORAPIPE_SCREENSHOTS when set (how docs/images/ are made)."""
    driver.save_screenshot(str(path))
    if os.environ.get("LORAPIPE_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["LORAPIPE_SCREENSHOTS"]) / path.name)
    return path
