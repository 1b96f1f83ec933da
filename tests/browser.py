"""Screenshots the browser tests take (the browser itself: lorapipe/reporting/browser.py, the `browser`
fixture in tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_screenshot(driver, path: Path) -> Path:
    """Screenshot to `path`; also into $LORAPIPE_SCREENSHOTS when set (how docs/images/app.png and
    report-data.png are made; report.png and results.png come from the demo's run: `make doc-images`)."""
    driver.save_screenshot(str(path))
    if os.environ.get("LORAPIPE_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["LORAPIPE_SCREENSHOTS"]) / path.name)
    return path
