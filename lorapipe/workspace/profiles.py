"""Apply a params profile (an overrides file in profiles/) to params.yaml and settings.yaml, keeping their
comments: each section goes to the file that holds it (lorapipe.core.params.FILE_OF).

    python -m lorapipe.workspace.profiles offline                 # profiles/offline.yaml -> params.yaml, settings.yaml
    python -m lorapipe.workspace.profiles colab --set lora.r=8    # and single keys, as `dvc exp run -S` takes them
    python -m lorapipe.workspace.profiles colab --sets "lora.r=8 train.lr=0.0001"   # a cloud job's SETS line

Afterwards `dvc repro` and `dvc exp run -S key=value` start from the merged values;
`git checkout params.yaml settings.yaml` returns to the real run.
"""

from __future__ import annotations

import argparse
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.outputs import atomic_path
from lorapipe.core.params import (
    FILE_OF,
    PARAM_FILES,
    SECTIONS,
    check_sections_at_home,
    parse_section,
    parse_yaml,
    read_params_file,
)

PROFILES = Path("profiles")


def apply_profile(overrides: dict[str, Any], root: Path = Path(".")) -> list[str]:
    """Merge `overrides` (section -> key -> value) into the params files under `root`, each section into its
    own file; returns the changed keys. Nothing is written unless every file loads afterwards."""
    for section, values in overrides.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise UserError(f"profile: unknown section '{section}'; known: {', '.join(SECTIONS)}")
    rt = YAML()  # round-trip: comments and layout survive the merge
    rt.preserve_quotes = True
    rt.width = 4096
    changed, merged = [], {}
    for name in PARAM_FILES:
        path = root / name
        check_sections_at_home(read_params_file(path), path)  # a broken file stops here, with its one-line error
        doc = rt.load(path.read_text())
        for section, values in overrides.items():
            if FILE_OF[section] != name:
                continue
            target = doc.setdefault(section, {})
            for key, value in values.items():
                if target.get(key) != value:
                    changed.append(f"{section}.{key}")
                target[key] = value
        buf = StringIO()
        rt.dump(doc, buf)
        merged[path] = buf.getvalue()
        sections = parse_yaml(merged[path], f"{path} + profile") or {}
        for section in (s for s in SECTIONS if FILE_OF[s] == name):  # the whole result must load first
            parse_section(SECTIONS[section], sections.get(section) or {}, source=f"{path} + profile")
    for path, text in merged.items():
        if any(FILE_OF[section] == path.name for section in overrides):
            with atomic_path(path) as tmp:
                tmp.write_text(text)
    return changed


def split_sets(line: str) -> list[str]:
    """A cloud job's SETS (cloud/train.yaml): its assignments in one line, separated by spaces, as
    scripts/sweep.py writes them and cloud/job.sh hands them over (`--sets`). A value cannot hold a space."""
    return line.split()


def parse_sets(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """`lora.r=8`-style assignments (as `dvc exp run -S` takes them, `settings.yaml:ops.log_every=1` too) ->
    section -> key -> value."""
    overrides: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        file, _, key = key.rpartition(":")
        section, _, name = key.partition(".")
        if not (name and value):
            raise UserError(f"--set {assignment}: expected SECTION.KEY=VALUE, e.g. lora.r=8")
        if file and file != FILE_OF.get(section, file):
            raise UserError(f"--set {assignment}: '{section}' is in {FILE_OF[section]}, not {file}")
        overrides.setdefault(section, {})[name] = parse_yaml(value, f"--set {key}")
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="name of a file in profiles/, without .yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="(repeatable)")
    parser.add_argument("--sets", default="", metavar="LINE", help="space-separated assignments: a cloud job's SETS")
    parser.add_argument("--dir", type=Path, default=Path("."), help=f"where {' and '.join(PARAM_FILES)} are")
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
    changed = apply_profile(overrides, args.dir)
    print(f"applied {source}: {len(changed)} value(s) changed")


if __name__ == "__main__":
    run_cli(main)
