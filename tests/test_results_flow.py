"""scripts/push_results.sh, the step that sends a run's results home: the token goes to the GitHub host alone,
only this run's experiments leave, and a credential planted in what would be pushed stops the push. A local
one-stage DVC repo and an HTTP git server that asks for the token play the run and GitHub. The whole loop
(each stage pushed as it finishes, a new machine that runs none again) runs in tests/test_notebook.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from lorapipe.core.params import PARAM_FILES
from tests.git_server import serve_git
from tests.workspace import (
    ROOT,
    assert_one_line_error,
    child_env,
    commit,
    committed_params_text,
    copy_workspace,
    sh,
)

# Built at run time, so no credential-shaped string sits in this file.
GITHUB_TOKEN = "gh" + "FAKEtoken" * 3
PLANTED = "planted" + "SECRET" * 3
# A stage that records data.url's host in its metrics, as the real download stage records its source.
SCORE_STAGE = (
    "python -c \"import json, pathlib; pathlib.Path('metrics').mkdir(exist_ok=True); "
    "pathlib.Path('metrics/eval.json').write_text(json.dumps({'tuned': {'rougeL': 0.5}}))\""
)


@pytest.fixture(scope="module")
def results_repo(tmp_path_factory) -> Path:
    """A DVC repo with the real run's params.yaml and settings.yaml and a one-stage pipeline that has run: `main`
    on `origin` (a bare repo), an experiment of an older commit (`old-exp`) and one of HEAD (`this-exp`), the
    results not yet committed, the colab profile's checkpoint mirror among them. Tests push copies of it."""
    root = tmp_path_factory.mktemp("results")
    repo, origins = root / "repo", root / "origins"
    sh(root, "git", "init", "-q", "--bare", str(origins / "origin.git"))
    repo.mkdir()
    sh(repo, "git", "init", "-q")
    sh(repo, "python", "-m", "lorapipe.workspace.git_identity")  # DVC commits the experiments
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "remote", "add", "-q", "-d", "local", "../store")
    for name in PARAM_FILES:
        (repo / name).write_text(committed_params_text(name))
    stages = {
        "score": {"cmd": SCORE_STAGE, "params": ["data.url"], "metrics": [{"metrics/eval.json": {"cache": False}}]}
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    commit(repo, "pipeline")
    sh(repo, "git", "branch", "-M", "main")
    sh(repo, "git", "push", "-q", str(origins / "origin.git"), "main")
    sh(repo, "dvc", "repro", "-q")
    sh(repo, "dvc", "exp", "save", "-q", "-n", "old-exp")
    (repo / "README.md").write_text("the next commit\n")
    sh(repo, "git", "add", "README.md")
    sh(repo, "git", "commit", "-qm", "next")  # the results stay uncommitted, for push_results.sh
    settings = repo / "settings.yaml"  # as `python -m lorapipe.workspace.profiles colab` leaves it
    settings.write_text(settings.read_text().replace("checkpoint_mirror: ''", "checkpoint_mirror: remote"))
    sh(repo, "dvc", "exp", "save", "-q", "-n", "this-exp")
    return root


def pushed(results_repo: Path, tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    """push_results.sh run on a copy of `results_repo`, with GITHUB_TOKEN set, against an HTTP `origin`
    that asks for it (GITHUB_SERVER_URL); the result and the copy's folder."""
    root = copy_workspace(results_repo, tmp_path / "results")
    repo = root / "repo"
    with serve_git(root / "origins", "x-access-token", GITHUB_TOKEN) as server:
        sh(repo, "git", "remote", "add", "origin", f"{server.url}/origin.git")
        environment = child_env(GITHUB_TOKEN=GITHUB_TOKEN, GITHUB_SERVER_URL=server.url, GIT_TERMINAL_PROMPT="0", **env)
        result = sh(
            repo, "bash", str(ROOT / "scripts/push_results.sh"), "results/colab", *args, check=False, env=environment
        )
    return result, root


def origin_refs(root: Path) -> list[str]:
    return sh(root, "git", "--git-dir", "origins/origin.git", "for-each-ref", "--format=%(refname)").stdout.split()


def test_the_token_goes_to_the_github_host_only_for_the_push_and_only_this_runs_experiments(results_repo, tmp_path):
    result, root = pushed(results_repo, tmp_path)
    assert result.returncode == 0, result.stderr
    refs = origin_refs(root)
    assert "refs/heads/results/colab" in refs and any(ref.endswith("/this-exp") for ref in refs)
    assert not any(ref.endswith("/old-exp") for ref in refs)  # another commit's experiment stays here
    message = sh(root, "git", "--git-dir", "origins/origin.git", "log", "-1", "--format=%B", "results/colab").stdout
    assert message.startswith("Results: score (dvc.lock") and socket.gethostname() not in message
    settings = sh(root, "git", "--git-dir", "origins/origin.git", "show", "results/colab:settings.yaml").stdout
    assert yaml.safe_load(settings)["ops"]["checkpoint_mirror"] == "remote"  # the run's settings went with it

    # Nothing left behind: another https host asking git for credentials gets none, token set or not.
    repo = root / "repo"
    assert "credential" not in (repo / ".git/config").read_text()
    ask = {"GITHUB_TOKEN": "x", "GIT_TERMINAL_PROMPT": "0"}
    fill = subprocess.run(
        ["git", "credential", "fill"],
        cwd=repo,
        input="protocol=https\nhost=gitlab.example.org\n\n",
        capture_output=True,
        text=True,
        env={k: v for k, v in child_env(**ask).items() if k != "GIT_ASKPASS"},
    )
    assert "password=" not in fill.stdout
    # The askpass the pushes use answers for the GitHub host alone.
    askpass = [str(ROOT / "scripts/github_askpass.sh")]
    prompts = {"https://github.com": "x", "https://gitlab.example.org": ""}
    for host, answer in prompts.items():
        prompt = f"Password for '{host.replace('://', '://x-access-token@')}': "
        said = subprocess.run([*askpass, prompt], capture_output=True, text=True, env=child_env(**ask))
        assert said.stdout.strip() == answer


@pytest.mark.parametrize(
    ("plant", "named"),
    [
        ("ops-userinfo", "settings.yaml: ops.checkpoint_mirror (user:password@)"),
        ("data-query", "params.yaml: data.url (?sessionid=)"),
        ("metrics", "metrics/eval.json: source (?token=)"),
        ("comment", "params.yaml (the value of $GITHUB_TOKEN, outside any value)"),
        ("experiment", "params.yaml of this-exp: data.url (user:password@)"),
    ],
)
def test_a_credential_planted_in_what_would_be_pushed_stops_the_push_before_anything_leaves(
    results_repo, tmp_path, plant, named
):
    """After the run, a credential lands in params.yaml or settings.yaml (any key), metrics/ or an experiment:
    nothing is committed or pushed, one line names the file and key, never the value."""
    source = copy_workspace(results_repo, tmp_path / "planted")
    repo, params, settings = source / "repo", source / "repo/params.yaml", source / "repo/settings.yaml"
    text = params.read_text()
    if plant == "ops-userinfo":
        mirror = f"checkpoint_mirror: s3://AKEY:{PLANTED}@host/b"
        settings.write_text(re.sub(r"checkpoint_mirror: \S+", mirror, settings.read_text()))
    elif plant == "data-query":
        params.write_text(re.sub(r"url: \S+", f"url: https://host/f.zip?sessionid={PLANTED}", text, count=1))
    elif plant == "metrics":
        (repo / "metrics/eval.json").write_text(json.dumps({"source": f"https://host/f?token={PLANTED}"}))
    elif plant == "comment":
        params.write_text(text + f"# {GITHUB_TOKEN}\n")
    else:  # in the experiment alone: the workspace gets its files back
        lock = (repo / "dvc.lock").read_text()
        params.write_text(re.sub(r"url: \S+", f"url: https://alice:{PLANTED}@host/f.zip", text, count=1))
        sh(repo, "dvc", "exp", "save", "-q", "-f", "-n", "this-exp")
        params.write_text(text)
        (repo / "dvc.lock").write_text(lock)
    head = sh(repo, "git", "rev-parse", "HEAD").stdout
    result, root = pushed(source, tmp_path)
    assert_one_line_error(result, "credentials in what would be pushed", named, "nothing was committed or pushed")
    assert PLANTED not in result.stdout + result.stderr and GITHUB_TOKEN not in result.stdout + result.stderr
    assert origin_refs(root) == ["refs/heads/main"]
    assert sh(root / "repo", "git", "rev-parse", "HEAD").stdout == head and not (root / "store").exists()
