"""The Colab notebook is valid and runs the commands docs/colab.md documents."""

from __future__ import annotations

import json

from tests.workspace import ROOT, sh, user_machine_env

NOTEBOOK = ROOT / "notebooks/colab.ipynb"


def shell_commands(skip_templated: bool = True) -> list[str]:
    """The notebook's `!` commands; those holding a {PARAM} are skipped unless asked for."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    lines = [line.strip() for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return [line[1:] for line in lines if line.startswith("!") and not (skip_templated and "{" in line)]


def test_notebook_is_valid_nbformat_4():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["accelerator"] == "GPU"
    for cell in nb["cells"]:
        assert cell["cell_type"] in {"code", "markdown"} and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None  # committed clean


def test_notebook_commands_match_the_docs():
    readme = ROOT.joinpath("docs/colab.md").read_text()
    commands = shell_commands()
    assert {"python scripts/remote.py --default", "python -m lorapipe.profiles colab"} <= set(commands)
    templated = shell_commands(skip_templated=False)
    assert (
        "bash scripts/repro_and_push.sh {BRANCH}" in templated and "bash scripts/push_results.sh {BRANCH}" in templated
    )
    assert "pip install -q -r requirements.txt" in commands  # no pins: Colab keeps its own torch/numpy
    for command in commands:
        assert f"\n{command}\n" in readme, f"docs/colab.md lacks `{command}`"


def test_notebook_reads_credentials_from_colab_secrets_only():
    text = NOTEBOOK.read_text()
    assert "userdata.get" in text
    for name in ("DAGSHUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "GITHUB_TOKEN"):
        assert f'"{name}"] = "' not in text  # never a literal value


def test_notebook_gives_a_fresh_vm_a_git_identity_before_dvc_commits(repo, tmp_path):
    """Colab's VM has no git identity: the notebook's own command gives the repo one before its
    `dvc exp run`, which can then commit the experiment, queued here (libgit2's path, which needs one)."""
    commands = shell_commands()
    identity, experiment = "python -m lorapipe.git_identity", "dvc exp run -S lora.r=8"
    assert commands.index(identity) < commands.index(experiment)
    assert commands.index(identity) < commands.index("python scripts/remote.py --default")  # before any commit
    for key in ("user.name", "user.email"):  # copy_tree's own call set one under .ci/run
        sh(repo, "git", "config", "--local", "--unset-all", key, check=False)
    env = user_machine_env(tmp_path / "home")
    sh(repo, *identity.split(), env=env)
    sh(repo, "python", "-m", "lorapipe.profiles", "colab", env=env)  # the notebook's edit, committed later
    sh(repo, *experiment.split(), "--queue", "-n", "colab", env=env)
    assert "colab" in sh(repo, "dvc", "queue", "status", env=env).stdout
    sh(repo, "dvc", "queue", "remove", "--all", env=env)
