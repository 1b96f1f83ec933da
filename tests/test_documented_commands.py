"""What the README and docs/ say is what the code does: the architecture page lists every file; the
README's two commands and next steps are what `make demo` prints and the user flow
(tests/test_user_flow.py) runs verbatim; every documented `dvc exp run` makes the experiments it reads as,
by DVC's own parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lorapipe.workspace.demo import NEXT_STEPS
from tests.workspace import ROOT, exp_run_sweep, readme_commands

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def check_readme(readme: Path) -> None:
    assert readme_commands("Two commands", readme) == ["make demo", "make test"]
    steps = readme_commands("Next steps", readme)
    printed = [command for command, _ in NEXT_STEPS]  # the lines make demo ends with
    assert [step for step in steps if step in printed] == printed, steps
    sweeps = [step for step in steps if step.startswith("dvc exp run --queue")]
    assert sweeps and all(len(exp_run_sweep(sweep)) >= 2 for sweep in sweeps), sweeps  # a sweep, not one run


def documented_exp_runs(page: Path) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", page.read_text(), re.S)
    lines = (line.split(" #")[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line.startswith("dvc exp run ")]


def test_readme_gives_the_commands_the_demo_prints_and_a_real_sweep():
    check_readme(ROOT / "README.md")


def test_the_check_fails_on_a_sweep_that_queues_one_experiment(tmp_path):
    planted = tmp_path / "README.md"
    planted.write_text((ROOT / "README.md").read_text().replace("-S lora.r=4,32", "-S lora.r=4 -S lora.r=32"))
    with pytest.raises(AssertionError, match=re.escape("sets lora.r more than once")):
        check_readme(planted)


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_every_documented_exp_run_sets_each_param_once(page):
    for command in documented_exp_runs(page):
        filled = re.sub(r"<[^>]+>", "x", command.replace("\\", ""))  # a placeholder (`<sha>`) is one value
        assert exp_run_sweep(filled), command


def test_the_study_commands_queue_one_experiment_per_combination():
    from lorapipe.reporting.study_sections import METHOD_STUDY_COMMAND, STUDY_COMMAND

    for command, runs in ((STUDY_COMMAND, 3), (METHOD_STUDY_COMMAND, 4)):
        queue = next(part.strip() for part in command.split("&&") if part.strip().startswith("dvc exp run --queue"))
        assert len(exp_run_sweep(queue)) == runs, command


def test_architecture_lists_every_file_of_the_code():
    listed = set(re.findall(r"^\| `([^`]+)` \|", (ROOT / "docs/architecture.md").read_text(), re.M))
    folders = ("stages/*.py", "lorapipe/*/*.py", "scripts/*", "cloud/*.py", "cloud/*.sh")
    files = {p.relative_to(ROOT).as_posix() for pattern in folders for p in ROOT.glob(pattern) if p.is_file()}
    files = {f for f in files if not f.endswith("__init__.py")} | {"app.py"}
    assert files - listed == set() and listed - files == set()


def defines(path: str, name: str) -> bool:
    """Whether the test file `path` names defines test `name`; `name*` stands for a family (..._bytes, ..._records).
    `path` is from the repo's root (tests/reliability/test_inputs.py) or the file's name alone (test_inputs.py)."""
    files = [ROOT / path] if path.startswith("tests/") else list((ROOT / "tests").rglob(path))
    pattern = "^def " + re.escape(name.rstrip("*")) + (r"\w+\(" if name.endswith("*") else r"\(")
    return len(files) == 1 and files[0].is_file() and re.search(pattern, files[0].read_text(), re.M) is not None


def test_every_test_the_docs_name_exists():
    """docs/reliability.md maps each failure scenario to its test, tests/README.md each claim: a renamed or removed
    test fails here."""
    pages = [*DOCS, ROOT / "tests/README.md"]
    named = {
        ref for page in pages for ref in re.findall(r"((?:tests/)?[\w/]*test_\w+\.py)::(\w+\*?)", page.read_text())
    }
    missing = [f"{path}::{name}" for path, name in sorted(named) if not defines(path, name)]
    assert named and not missing, missing


def test_the_readme_links_every_docs_page_and_stays_a_guide():
    readme = (ROOT / "README.md").read_text()
    assert {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")} <= set(
        re.findall(r"\]\((docs/[\w-]+\.md)\)", readme)
    )
    lines = readme.splitlines()
    assert len(lines) <= 250 and lines.index("## Two commands") < 40
