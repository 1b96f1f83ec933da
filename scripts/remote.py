"""Configure the DagsHub DVC remote (S3 API) from environment variables, credentials kept local.

    DAGSHUB_USER=me DAGSHUB_REPO=lorapipe DAGSHUB_TOKEN=... python scripts/remote.py [--default]

Writes the remote's URL and endpoint to .dvc/config (tracked) and the token only to
.dvc/config.local (git-ignored, owner-only). The endpoint is the repository's S3 API on the `dagshub`
client's host (lorapipe.workspace.dagshub_login.repo_url): the HTTPS remote (.dvc) fails on large files.
`--endpoint` points it at another S3-compatible server.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lorapipe.core.cli import UserError, run_cli
from lorapipe.workspace.dagshub_login import TOKEN_VARIABLES, repo_url, token_from_env

REMOTE = "dagshub"


def configure(name: str, endpoint: str, key_id: str, secret: str, default: bool) -> None:
    """Through DVC's own config API, in this process: a `dvc remote modify` child would carry the
    secret in its command line, readable by every local user in the process table."""
    from dvc.config import Config

    # Validated once both levels are written: until then a local section may lack its url.
    config = Config.from_cwd(validate=False)
    with config.edit("repo", validate=False) as conf:
        conf["remote"][name] = {"url": "s3://dvc", "endpointurl": endpoint}
        if default:
            conf["core"]["remote"] = name
    with config.edit("local") as conf:
        conf["remote"][name] = {"access_key_id": key_id, "secret_access_key": secret}
    Path(config.dvc_dir, "config.local").chmod(0o600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=REMOTE)
    parser.add_argument("--endpoint", help="S3 endpoint; default https://dagshub.com/$DAGSHUB_USER/$DAGSHUB_REPO.s3")
    parser.add_argument("--default", action="store_true", help="make it the default remote for push/pull")
    args = parser.parse_args(argv)
    env = os.environ
    dagshub_token = (token_from_env() or ("", ""))[1]
    token = dagshub_token or env.get("AWS_SECRET_ACCESS_KEY")
    key_id = dagshub_token or env.get("AWS_ACCESS_KEY_ID")
    endpoint = args.endpoint
    if not endpoint:
        if not (env.get("DAGSHUB_USER") and env.get("DAGSHUB_REPO")):
            raise UserError("set DAGSHUB_USER and DAGSHUB_REPO (or pass --endpoint)")
        endpoint = f"{repo_url(env['DAGSHUB_USER'], env['DAGSHUB_REPO'])}.s3"
    if not (token and key_id):
        raise UserError(f"set {' or '.join(TOKEN_VARIABLES)} (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    from dvc.exceptions import DvcException

    try:
        configure(args.name, endpoint, key_id, token, args.default)
    except DvcException as err:
        reason = str(err).replace(token, "***").splitlines()[0]
        raise UserError(f"dvc remote setup failed: {reason}") from None
    print(f"remote '{args.name}' -> {endpoint} (credentials in .dvc/config.local, not tracked)")


if __name__ == "__main__":
    run_cli(main)
