"""Configure the DagsHub DVC remote (S3 API) from environment variables, credentials kept local.

    DAGSHUB_USER=me DAGSHUB_REPO=lorapipe DAGSHUB_TOKEN=... python -m lorapipe.remote [--default]

Writes the remote's URL and endpoint to .dvc/config (tracked) and the token only to
.dvc/config.local (git-ignored). `--endpoint` points it at another S3-compatible server.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

REMOTE = "dagshub"


def dvc(*args: str) -> None:
    # The token is passed as an argument to a local dvc process only; nothing here prints it.
    subprocess.run(["dvc", *args], check=True, capture_output=True, text=True)


def configure(name: str, endpoint: str, key_id: str, secret: str, default: bool) -> None:
    dvc("remote", "add", "--force", *(["--default"] if default else []), name, "s3://dvc")
    dvc("remote", "modify", name, "endpointurl", endpoint)
    dvc("remote", "modify", "--local", name, "access_key_id", key_id)
    dvc("remote", "modify", "--local", name, "secret_access_key", secret)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=REMOTE)
    parser.add_argument("--endpoint", help="S3 endpoint; default https://dagshub.com/$DAGSHUB_USER/$DAGSHUB_REPO.s3")
    parser.add_argument("--default", action="store_true", help="make it the default remote for push/pull")
    args = parser.parse_args(argv)
    env = os.environ
    token = env.get("DAGSHUB_TOKEN") or env.get("AWS_SECRET_ACCESS_KEY")
    key_id = env.get("DAGSHUB_TOKEN") or env.get("AWS_ACCESS_KEY_ID")
    endpoint = args.endpoint
    if not endpoint:
        if not (env.get("DAGSHUB_USER") and env.get("DAGSHUB_REPO")):
            print("error: set DAGSHUB_USER and DAGSHUB_REPO (or pass --endpoint)", file=sys.stderr)
            return 1
        endpoint = f"https://dagshub.com/{env['DAGSHUB_USER']}/{env['DAGSHUB_REPO']}.s3"
    if not (token and key_id):
        print("error: set DAGSHUB_TOKEN (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", file=sys.stderr)
        return 1
    try:
        configure(args.name, endpoint, key_id, token, args.default)
    except subprocess.CalledProcessError as err:
        print(f"error: dvc remote setup failed: {err.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    print(f"remote '{args.name}' -> {endpoint} (credentials in .dvc/config.local, not tracked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
