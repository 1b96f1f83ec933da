"""What every entry point shares (stages, `python -m lorapipe...` tools, scripts/, app.py): one
error type for mistakes a user can fix, one-line failures, plain logging and progress bars (quiet:
a line per thing done, no library's chatter), and the optional log of each one's time and memory."""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from lorapipe.core.credentials import redact, redact_handlers

log = logging.getLogger("lorapipe")

# A file each entry point appends its wall time and peak memory to; `python -m lorapipe.core.timings` shows it.
TIMINGS_ENV = "LORAPIPE_TIMINGS"


def record_stage(name: str) -> None:
    """Append this process's wall time (imports included) and its peak RSS to the log, if one is set."""
    path = os.environ.get(TIMINGS_ENV)
    if not path:
        return
    seconds = time.time() - psutil.Process().create_time()
    # Children too: torchrun's workers, the GGUF converter.
    peak_kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    entry = {"step": name, "seconds": round(seconds, 1), "peak_mib": round(peak_kib / 1024)}
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A progress bar for work that may take long (a download, decoding the test set): it shows only once
    the work has run a while (tqdm's defaults as lorapipe/__init__.py sets them: 2 s on a terminal; 30 s
    where stderr is no terminal, Colab's `!` cells or a CI log, updated every 30 s) and is erased when it
    ends, where the stage's own line says what was done. Brief work prints nothing."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def duration(seconds: float) -> str:
    """`42s`, `4m 18s`, `2h 05m`: a time span as a progress line shows it."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class UserError(Exception):
    """A failure the user can fix (bad params, a missing input, a refused service); printed as one
    line, never as a traceback."""


def run_cli(main: Callable[[], int | None]) -> None:
    """Run an entry point's main() and exit with its status (None: 0). UserError and Ctrl-C end it
    with one `error: ...` line and exit 1 or 130; anything else is a bug and keeps its traceback. Every
    line logged, ours or a library's that reaches the root logger (urllib3's retries), and the error line
    are redacted (lorapipe.core.credentials.redact). Our lines from INFO up, a library's from WARNING up: their
    INFO lines (matplotlib's new font cache, ...) say nothing a user acts on."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    redact_handlers(logging.getLogger())
    try:
        status = main()
        record_stage(Path(sys.argv[0]).stem)
    except UserError as err:
        # tqdm.write: a progress bar still open (the failure came mid-loop) must not prefix the line.
        tqdm.write(f"error: {redact(str(err))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        why = str(err) or "interrupted; outputs written so far are complete, rerun to continue"
        tqdm.write(f"error: {redact(why)}", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
