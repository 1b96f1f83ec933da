"""Apply a params profile (an overrides file in profiles/) to params.yaml, keeping its comments.

    python -m lorapipe.profiles offline                 # profiles/offline.yaml -> params.yaml
    python -m lorapipe.profiles colab --set lora.r=8    # and single keys, as `dvc exp run -S` takes them
    python -m lorapipe.profiles colab --sets "lora.r=8 train.lr=0.0001"   # a cloud job's SETS line

Afterwards `dvc repro` and `dvc exp run -S key=value` start from the merged values;
`git checkout params.yaml` returns to the real run.
"""

from __future__ import annotations

import argparse
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from lorapipe.cli import UserError, run_cli
from lorapipe.outputs import atomic_path
from lorapipe.params import PARAMS_FILE, SECTIONS, parse_section, parse_yaml, read_params_file

PROFILES = Path("profiles")


def apply_profile(overrides: dict[str, Any], params_path: Path) -> list[str]:
    """Merge `overrides` (section -> key -> value) into params_path; returns the changed keys."""
    read_params_file(params_path)  # a broken params.yaml stops here, with its one-line error
    rt = YAML()  # round-trip: comments and layout survive the merge
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(params_path.read_text())
    changed = []
    for section, values in overrides.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise UserError(f"profile: unknown section '{section}'; known: {', '.join(SECTIONS)}")
        target = doc.setdefault(section, {})
        for key, value in values.items():
            if target.get(key) != value:
                changed.append(f"{section}.{key}")
            target[key] = value
    buf = StringIO()
    rt.dump(doc, buf)
    merged = parse_yaml(buf.getvalue(), f"{params_path} + profile") or {}
    for section in SECTIONS:  # the whole result must load before it replaces params.yaml
        parse_section(SECTIONS[section], merged.get(section) or {}, source=f"{params_path} + profile")
    with atomic_path(params_path) as tmp:
        tmp.write_text(buf.getvalue())
    return changed


def split_sets(line: str) -> list[str]:
    """A cloud job's SETS (cloud/train.yaml): its assignments in one line, separated by spaces, as
    scripts/sweep.py writes them and cloud/job.sh hands them over (`--sets`). A value cannot hold a space."""
    return line.split()


def parse_sets(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """`lora.r=8`-style assignments (as `dvc exp run -S` takes them) -> section -> key -> value."""
    overrides: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        section, _, name = key.partition(".")
        if not (name and value):
            raise UserError(f"--set {assignment}: expected SECTION.KEY=VALUE, e.g. lora.r=8")
        overrides.setdefault(section, {})[name] = parse_yaml(value, f"--set {key}")
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="name of a file in profiles/, without .yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="(repeatable)")
    parser.add_argument("--sets", default="", metavar="LINE", help="space-separated assignments: a cloud job's SETS")
    parser.add_argument("--params", type=Path, default=Path(PARAMS_FILE))
    args = parser.parse_args(argv)
    source = PROFILES / f"{args.profile}.yaml"
    if not source.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml"))) or "none"
        raise UserError(f"{source}: no such profile; known: {known}")
    overrides = parse_yaml(source.read_text(encoding="utf-8"), str(source)) or {}
    if not isinstance(overrides, dict):
        raise UserError(f"{source}: expected a mapping of sections (lora, train, ...), got {type(overrides).__name__}")
    for section, values in parse_sets([*split_sets(args.sets), *args.set]).items():
        overrides.setdefault(section, {}).update(values)
    changed = apply_profile(overrides, args.params)
    print(f"applied {source} to {args.params}: {len(changed)} value(s) changed")


if __name__ == "__main__":
    run_cli(main)
