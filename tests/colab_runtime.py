"""Colab's runtime, as far as the notebook uses it, for tests/test_notebook.py: the code cells run in one
Python namespace (one runtime: a second pass sees the first one's variables and folder), a `!` line runs in
bash after IPython's `{expression}` expansion, `%cd` changes the folder, and a form field (`# @param`)
takes the value a user typed.

    python -m tests.colab_runtime NOTEBOOK SETTINGS.json

SETTINGS: {"passes": 2, "forms": {NAME: value}, "stand_ins": {TEXT: source}} (a cell holding TEXT runs
`source` instead). A failing `!` command ends the run with its exit status: Colab would print and go on,
and a test must not. Each pass ends with a line naming the commit checked out in the folder it ended in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys


def expand(text: str, namespace: dict) -> str:
    """IPython's expansion of a `!` or `%` line: each {expression} evaluated in the namespace."""
    return re.sub(r"\{([^{}]+)\}", lambda m: str(eval(m.group(1), namespace)), text)


def bang(command: str, namespace: dict) -> None:
    command = expand(command, namespace)
    print(f"$ {command}", flush=True)
    status = subprocess.run(["bash", "-c", command]).returncode
    if status != 0:
        print(f"notebook command failed ({status}): {command}", flush=True)
        sys.exit(status)


def cd(path: str, namespace: dict) -> None:
    os.chdir(expand(path, namespace))
    print(os.getcwd(), flush=True)


def translate(source: str, forms: dict) -> str:
    """A cell's source as plain Python: `!` and `%cd` lines as calls, form fields set to `forms`' values."""
    lines = []
    for line in source.splitlines():
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        field = re.match(r"(\w+) = .*# @param", body)
        if field and field.group(1) in forms:
            lines.append(f"{indent}{field.group(1)} = {forms[field.group(1)]!r}")
        elif body.startswith("!"):
            lines.append(f"{indent}_bang({body[1:]!r}, globals())")
        elif body.startswith("%cd "):
            lines.append(f"{indent}_cd({body[4:]!r}, globals())")
        else:
            lines.append(line)
    return "\n".join(lines)


def main(notebook: str, settings_file: str) -> None:
    with open(notebook) as f:
        cells = [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    with open(settings_file) as f:
        settings = json.load(f)
    namespace = {"__name__": "__main__", "_bang": bang, "_cd": cd}
    for run in range(1, settings["passes"] + 1):
        for number, cell in enumerate(cells, 1):
            source = "".join(cell["source"])
            source = next((v for k, v in settings.get("stand_ins", {}).items() if k in source), source)
            print(f"=== pass {run}, code cell {number}", flush=True)
            exec(compile(translate(source, settings.get("forms", {})), f"<code cell {number}>", "exec"), namespace)
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        print(f"=== pass {run} ended at {head}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
