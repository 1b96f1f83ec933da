"""A machine without a git identity (Colab, a container, a new box): DVC needs one to commit experiments,
`python -m lorapipe.workspace.git_identity` gives the repository one in a single line, and never replaces one
there is."""

from __future__ import annotations

from pathlib import Path

from tests.workspace import assert_one_line_error, sh, user_machine_env


def without_identity(repo: Path) -> None:
    """Drop the repo-local identity copy_tree's own git_identity call may have set (it does under .ci/run)."""
    for key in ("user.name", "user.email"):
        sh(repo, "git", "config", "--local", "--unset-all", key, check=False)


def local_identity(repo: Path) -> dict[str, str]:
    found = sh(repo, "git", "config", "--local", "--get-regexp", r"^user\.", check=False).stdout.split("\n")
    return dict(line.split(" ", 1) for line in found if line)


def test_no_identity_gets_a_repo_local_one_in_one_line_and_dvc_commits(repo, tmp_path):
    without_identity(repo)
    env = user_machine_env(tmp_path / "home")
    # With a change in the workspace (a params edit), DVC stashes it through libgit2, which finds no identity.
    sh(repo, "python", "-m", "lorapipe.workspace.profiles", "offline", "--set", "sample.size=900", env=env)
    refused = sh(repo, "dvc", "exp", "run", "split", env=env, check=False)
    assert refused.returncode != 0 and "must be configured" in refused.stderr  # what a fresh machine got

    given = sh(repo, "python", "-m", "lorapipe.workspace.git_identity", env=env)
    assert len(given.stdout.splitlines()) == 1 and given.stdout.startswith("git identity: no user.name or user.email")
    assert "git config user.name" in given.stdout and given.stderr == ""
    assert local_identity(repo) == {"user.name": "lorapipe", "user.email": "lorapipe@users.noreply.github.com"}
    assert sh(repo, "python", "-m", "lorapipe.workspace.git_identity", env=env).stdout == ""  # once is enough

    sh(repo, "dvc", "exp", "run", "split", "-n", "fresh-machine", env=env)
    assert "fresh-machine" in sh(repo, "dvc", "exp", "list", "--name-only", env=env).stdout.split()


def test_an_existing_identity_is_never_replaced(repo, tmp_path):
    without_identity(repo)
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Ada\n\temail = ada@example.com\n")
    # A global identity (GIT_CONFIG_GLOBAL names the user's file), or the variables CI runners set.
    for env in (
        user_machine_env(tmp_path / "home", GIT_CONFIG_GLOBAL=str(config)),
        user_machine_env(
            tmp_path / "home",
            GIT_AUTHOR_NAME="bot",
            GIT_AUTHOR_EMAIL="bot@ci",
            GIT_COMMITTER_NAME="bot",
            GIT_COMMITTER_EMAIL="bot@ci",
        ),
    ):
        assert sh(repo, "python", "-m", "lorapipe.workspace.git_identity", env=env).stdout == ""
        assert local_identity(repo) == {}

    # Half an identity: the missing key is added, the one there is kept.
    sh(repo, "git", "config", "--local", "user.email", "me@example.com")
    given = sh(repo, "python", "-m", "lorapipe.workspace.git_identity", env=user_machine_env(tmp_path / "home"))
    assert given.stdout.startswith("git identity: no user.name configured")
    assert local_identity(repo) == {"user.email": "me@example.com", "user.name": "lorapipe"}


def test_outside_a_repository_it_says_so_in_one_line(tmp_path):
    env = user_machine_env(tmp_path / "home")
    outside = sh(tmp_path, "python", "-m", "lorapipe.workspace.git_identity", env=env, check=False)
    assert_one_line_error(outside, "not inside a git repository")
