"""Credentials never ride in a URL that is recorded, printed or pushed.

`data.url` is a param: DVC copies it into dvc.lock, `dvc params diff`, the PR report and the results page;
`ops.checkpoint_mirror` is a setting (settings.yaml); scripts/push_results.sh pushes both. So a URL holding
credentials is refused (`url_credentials` says which parts do), and the download and the mirror take them from the
environment instead. Whatever leaves the machine is checked the same way (`lorapipe.workspace.outbound`), and every
line lorapipe prints, logs or writes into a report goes through `redact`.
"""

from __future__ import annotations

import logging
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

# Query, fragment or `;path` parameter names whose value is a secret, compared case-insensitively: API keys
# and tokens, passwords, session ids, and the signatures of presigned S3 / GCS / Azure URLs. A name also
# counts when its last `_`/`-`/`.`-separated word is one of them (`sas_token`, `X-Amz-Signature`,
# `private_key`), or when it is one of them with the separators left out (`session_id`, `api-key`).
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
        "credentials",
        "awsaccesskeyid",
        "sessionid",
        "jsessionid",
        "phpsessid",
        "sid",
        "session",
    }
)

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# `name=value` after a `?`, `&`, `;` or `#` (or a space or the start), as in a URL without its scheme that
# a library quotes (urllib3: `Max retries exceeded with url: /?token=...`); the value ends at the next one.
# (`?token=` alone, as our messages name a part, has no value to hide.)
_PAIR = re.compile(r"(?P<lead>^|[?&;#\s])(?P<name>[A-Za-z][\w.-]*)=(?P<value>[^&;#\s'\"<>),]+)")
HIDDEN = "***"


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    return (
        key in SECRET_QUERY_WORDS
        or re.split(r"[-_.]", key)[-1] in SECRET_QUERY_WORDS
        or re.sub(r"[-_.]", "", key) in SECRET_QUERY_WORDS
    )


def url_credentials(url: str) -> list[str]:
    """The parts of `url` that hold credentials, named without their values ([] for a local path);
    ValueError for a URL that cannot be parsed (an unclosed IPv6 bracket)."""
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return []
    found = ["user:password@" if ":" in parts.netloc.rpartition("@")[0] else "user@"] if "@" in parts.netloc else []
    path_params = [param for segment in parts.path.split("/") for param in segment.split(";")[1:]]
    for where, pairs in (
        (";", [param.partition("=")[::2] for param in path_params]),
        ("?", parse_qsl(parts.query, keep_blank_values=True)),
        ("#", parse_qsl(parts.fragment, keep_blank_values=True)),
    ):
        found += [f"{where}{key}=" for key, _ in pairs if _is_secret_key(key)]
    return found


def credentials_in(text: str) -> list[str]:
    """The parts holding credentials of every URL in `text` (as `url_credentials` names them, each once)."""
    found: list[str] = []
    for match in _URL.finditer(text):
        try:
            parts = url_credentials(match.group())
        except ValueError:  # unparsable: its authority may hold anything
            parts = ["an unparsable URL"]
        found += [part for part in parts if part not in found]
    return found


def redact(text: str) -> str:
    """`text` with every URL in it cut to scheme, host and path: no user:password@, no `;` parameters, no
    query string (whose other keys may hold secrets too), no fragment; and the value of every secret-named
    `name=value` left (a URL quoted without its scheme) shown as ***. Safe to print or write."""
    text = _URL.sub(lambda match: _redact_url(match.group()), text)
    return _PAIR.sub(lambda m: f"{m['lead']}{m['name']}={HIDDEN}" if _is_secret_key(m["name"]) else m.group(), text)


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable: nothing after the scheme is shown
        return url.partition("://")[0] + "://(unparsable URL)"
    path = "/".join(segment.split(";")[0] for segment in parts.path.split("/"))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{path}"


class RedactingFilter(logging.Filter):
    """On a handler: every record it emits, ours or a library's (urllib3's retry warnings), is redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's malformed record: left to logging's own error report
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Put a RedactingFilter on each of `logger`'s handlers (once)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
