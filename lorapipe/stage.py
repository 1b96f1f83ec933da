"""What every stage script shares: one error type, one-line failures, plain logging."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

log = logging.getLogger("lorapipe")


class StageError(Exception):
    """A failure the user can fix; printed as one line, never as a traceback."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): StageError and Ctrl-C end it with one line and a non-zero exit."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        main()
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        why = str(err) or "interrupted; outputs written so far are complete, rerun to continue"
        print(f"error: {why}", file=sys.stderr)
        sys.exit(130)
