"""What every stage script shares: one error type, one-line failures, plain logging, progress."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lorapipe.timings import record_stage

log = logging.getLogger("lorapipe")


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A progress bar that also shows where stderr is no terminal (Colab's `!` cells, CI logs):
    there it updates every 30 s, rate and ETA included, instead of switching itself off."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30)
    return tqdm(iterable, **kwargs)


class StageError(Exception):
    """A failure the user can fix; printed as one line, never as a traceback."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): StageError and Ctrl-C end it with one line and a non-zero exit."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        main()
        record_stage(Path(sys.argv[0]).stem)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        why = str(err) or "interrupted; outputs written so far are complete, rerun to continue"
        print(f"error: {why}", file=sys.stderr)
        sys.exit(130)
