"""The code a stage runs, as dvc.yaml declares it: the script and the lorapipe modules it imports.

One definition, two readers: tests/test_dvc_yaml.py checks each stage's code deps in dvc.yaml against
it, and train identifies a run by these files' bytes, so a checkpoint of other code is never resumed.
"""

from __future__ import annotations

import ast
from pathlib import Path

# The repository root: stages/ and lorapipe/ sit under it.
CODE_ROOT = Path(__file__).resolve().parents[2]

# Imported by stages for errors, timing logs, atomic writes, params (credentials.py: the refusal of
# credentials in a URL and the redaction of logged ones), naming commits (vcs, for run tracking)
# and this very listing: nothing a stage computes depends on them, so editing them must not re-run
# the DAG. artifacts.py holds the paths dvc.yaml names for readers; a stage writes where
# its command line says, so renaming an output changes dvc.yaml's cmd, which re-runs the stage anyway.
# disk_space.py only refuses, before training, a run whose checkpoints cannot fit.
INFRASTRUCTURE = frozenset(
    {
        "lorapipe/core/artifacts.py",
        "lorapipe/core/cli.py",
        "lorapipe/core/credentials.py",
        "lorapipe/train/disk_space.py",
        "lorapipe/core/timings.py",
        "lorapipe/core/outputs.py",
        "lorapipe/core/params.py",
        "lorapipe/core/stage_code.py",
        "lorapipe/core/vcs.py",
    }
)


def lorapipe_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """lorapipe modules (as `lorapipe/x.py`) that `path` imports, transitively, wherever the import stands."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lorapipe."):
            package = node.module.replace(".", "/")
            if (CODE_ROOT / package).is_dir():  # from lorapipe.data import cleaning: the module cleaning
                modules = [f"{package}/{alias.name}.py" for alias in node.names]
            else:
                modules = [package + ".py"]
            for module in modules:
                if module not in seen:
                    seen.add(module)
                    lorapipe_imports(CODE_ROOT / module, seen)
    return seen


def code_files(script: Path) -> dict[str, Path]:
    """The running stage's code by dvc.yaml's names -> the files that run: the script (its `__file__`)
    and the lorapipe modules it computes with, where Python imports them from."""
    script = Path(script).resolve()
    modules = lorapipe_imports(script) - INFRASTRUCTURE
    return {f"{script.parent.name}/{script.name}": script, **{name: CODE_ROOT / name for name in sorted(modules)}}
