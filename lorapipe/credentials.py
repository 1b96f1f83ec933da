"""Credentials never ride in a URL that is recorded or printed.

`data.url` is a param: DVC copies it into dvc.lock, `dvc params diff`, the PR report and the results
page, and scripts/push_results.sh pushes them. So a URL holding credentials is refused (`url_credentials`
says which parts do), and the download takes them from the environment instead. Every URL or URI that is
logged (the download's, MLflow's tracking URI, error messages quoting them) goes through `redact`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

# The download's credentials, for a server that asks for them (HTTP 401/403). Without these, requests
# still reads ~/.netrc for the host.
TOKEN_ENV = "LORAPIPE_DATA_TOKEN"  # sent as `Authorization: Bearer <token>`
USER_ENV, PASSWORD_ENV = "LORAPIPE_DATA_USER", "LORAPIPE_DATA_PASSWORD"  # HTTP basic auth
HOW_TO_GIVE_CREDENTIALS = (
    f"give them as {TOKEN_ENV} (a bearer token) or {USER_ENV} and {PASSWORD_ENV} (basic auth), or in ~/.netrc; "
    "or download the file yourself and set data.url to its local path"
)

# Query (or fragment) keys whose value is a secret, compared case-insensitively: API keys and tokens,
# passwords, and the signatures of presigned S3 / GCS / Azure URLs. A key also counts when its last
# `_`/`-`/`.`-separated word is one of them (`sas_token`, `X-Amz-Signature`, `private_key`).
SECRET_QUERY_WORDS = frozenset(
    {
        "token",
        "access_token",
        "apikey",
        "key",
        "secret",
        "password",
        "passwd",
        "pwd",
        "auth",
        "signature",
        "sig",
        "credential",
        "awsaccesskeyid",
    }
)

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    return key in SECRET_QUERY_WORDS or re.split(r"[-_.]", key)[-1] in SECRET_QUERY_WORDS


def url_credentials(url: str) -> list[str]:
    """The parts of `url` that hold credentials, named without their values ([] for a local path);
    ValueError for a URL that cannot be parsed (an unclosed IPv6 bracket)."""
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return []
    found = ["user:password@" if ":" in parts.netloc.rpartition("@")[0] else "user@"] if "@" in parts.netloc else []
    for where, text in (("?", parts.query), ("#", parts.fragment)):
        found += [f"{where}{key}=" for key, _ in parse_qsl(text, keep_blank_values=True) if _is_secret_key(key)]
    return found


def redact(text: str) -> str:
    """`text` with every URL in it cut to scheme, host and path: no user:password@, no query string (whose
    other keys may hold secrets too), no fragment. Safe to print or write."""
    return _URL.sub(lambda match: _redact_url(match.group()), text)


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable: nothing after the scheme is shown
        return url.partition("://")[0] + "://(unparsable URL)"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
