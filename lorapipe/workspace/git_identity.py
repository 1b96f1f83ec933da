"""Give this repository a git identity when the machine has none, so DVC can commit experiments.

    python -m lorapipe.workspace.git_identity     # make demo and the Colab notebook run it before DVC commits

`dvc exp run` commits every experiment, and DVC takes the author and committer from git's
`user.name`/`user.email` or the GIT_AUTHOR_*/GIT_COMMITTER_* variables; a fresh Colab VM, a
container or a new box has neither, and DVC stops with "Git user name and email must be
configured". Where that is so, this sets the missing keys in the repository's own .git/config
(never the user's global config) and says so in one line. An identity that is there is kept.
"""

from __future__ import annotations

import os

from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.vcs import git

# Also the author of the results commits that scripts/push_results.sh makes on a machine without one.
FALLBACK = {"user.name": "lorapipe", "user.email": "lorapipe@users.noreply.github.com"}
# DVC's signature: each role's variable, else the config key (scmrepo's pygit2 backend).
ROLES = ("GIT_AUTHOR", "GIT_COMMITTER")


def missing_keys() -> list[str]:
    """The config keys DVC would need and finds neither in git's config nor in the environment."""
    configured = {key: git("config", "--get", key) for key in FALLBACK}
    missing = []
    for key, suffix in (("user.name", "NAME"), ("user.email", "EMAIL")):
        if not configured[key] and not all(os.environ.get(f"{role}_{suffix}") for role in ROLES):
            missing.append(key)
    return missing


def ensure_identity() -> str | None:
    """Set the missing keys repo-locally; returns the notice to print, or None when nothing was missing."""
    if not git("rev-parse", "--git-dir"):
        raise UserError("git identity: not inside a git repository; run this from the lorapipe checkout")
    missing = missing_keys()
    if not missing:
        return None
    for key in missing:
        git("config", "--local", key, FALLBACK[key])
    if still := missing_keys():
        raise UserError(f"git identity: could not write {still[0]} to .git/config; set it: git config {still[0]} ...")
    name, email = (git("config", "--get", key) for key in FALLBACK)
    return (
        f"git identity: no {' or '.join(missing)} configured, so this repository's commits (DVC experiments) are "
        f"by '{name} <{email}>' (.git/config); yours: git config user.name 'Your Name'; git config user.email you@x.org"
    )


def main() -> None:
    notice = ensure_identity()
    if notice:
        print(notice)


if __name__ == "__main__":
    run_cli(main)
