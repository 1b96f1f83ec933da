"""Log in to DagsHub with its `dagshub` client and point MLflow at the repository: no prompt, one request.

    from lorapipe.workspace.dagshub_login import login; login("me", "lorapipe", token)   # the Colab notebook
    env=$(python -m lorapipe.workspace.dagshub_login) && eval "$env"   # a shell; DAGSHUB_USER, _REPO, _TOKEN set

`dagshub.init(owner, repo, mlflow=True)` sets MLflow's three variables too, but it also creates the repository
when it finds none, without a token it starts an interactive OAuth login (a cloud job would wait forever), and
`dvc=True` adds DagsHub's HTTPS remote, which fails on files of about 280 MB (treeverse/dvc#10330). So this
takes its parts: the client's own token check (one GET of <host>/api/v1/user, which names the token's user for
MLflow's basic auth), DAGSHUB_USER_TOKEN for every later `dagshub` call here or in a child process, and MLflow's
variables. The DVC remote is DagsHub's S3 endpoint (scripts/remote.py: the token only in .dvc/config.local).
The client's DAGSHUB_CLIENT_HOST moves all of them to another DagsHub instance (the tests: to 127.0.0.1).

Tracking is params, metrics, tags and files (lorapipe.train.tracking), never MLflow's `log_model`: DagsHub's hosted
MLflow is 2.x, where an MLflow 3 client's `log_model` fails and model registration answers 404. A teammate
fetches the model as a DVC artifact instead (dvc.yaml's `artifacts:`, `dvc artifacts get`).
"""

from __future__ import annotations

import os
import shlex

from lorapipe.core.cli import UserError, run_cli
from lorapipe.core.credentials import redact

# Where a DagsHub token may be: ours (the Colab secret's and the workflows' name), then the client's own.
TOKEN_VARIABLES = ("DAGSHUB_TOKEN", "DAGSHUB_USER_TOKEN")


def token_from_env() -> tuple[str, str] | None:
    """(variable, token) of the first TOKEN_VARIABLES that is set."""
    return next(((name, os.environ[name]) for name in TOKEN_VARIABLES if os.environ.get(name)), None)


def repo_url(owner: str, repo: str) -> str:
    """The repository on DagsHub (the client's host): + ".mlflow" is its MLflow, + ".s3" its S3 endpoint."""
    from dagshub.common import config

    return f"{config.host}/{owner}/{repo}"


def login(owner: str, repo: str, token: str) -> str:
    """Check `token` with DagsHub, make it the client's, and set MLflow's tracking variables for owner/repo in
    os.environ (child processes inherit them). Returns the token's username; UserError if DagsHub refuses it."""
    import httpx
    from dagshub.auth.tokens import TokenStorage
    from dagshub.common import config

    try:
        user = TokenStorage.get_username_of_token(token, config.host)
    except httpx.HTTPError as err:
        raise UserError(f"cannot reach DagsHub at {config.host}: {redact(str(err)) or type(err).__name__}") from None
    if user is None:
        raise UserError(f"{config.host} refused the DagsHub token: make an app token in your DagsHub user settings")
    config.token = token  # read from the environment when the client was imported
    os.environ["DAGSHUB_USER_TOKEN"] = token
    os.environ["MLFLOW_TRACKING_URI"] = f"{repo_url(owner, repo)}.mlflow"
    os.environ["MLFLOW_TRACKING_USERNAME"] = user["username"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = token
    return user["username"]


def main() -> None:
    """Log in, then print the variables for a shell to `eval`; the token as a reference to its variable."""
    found, owner, repo = token_from_env(), os.environ.get("DAGSHUB_USER"), os.environ.get("DAGSHUB_REPO")
    if not (found and owner and repo):
        raise UserError(f"set DAGSHUB_USER, DAGSHUB_REPO and {' or '.join(TOKEN_VARIABLES)}")
    variable, token = found
    username = login(owner, repo, token)
    print(f"export MLFLOW_TRACKING_URI={shlex.quote(os.environ['MLFLOW_TRACKING_URI'])}")
    print(f"export MLFLOW_TRACKING_USERNAME={shlex.quote(username)}")
    for name in ("MLFLOW_TRACKING_PASSWORD", "DAGSHUB_USER_TOKEN"):
        print(f'export {name}="${variable}"')


if __name__ == "__main__":
    run_cli(main)
