"""Fetch the raw dataset: stream with a progress bar, resume partial downloads, verify sha256."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlparse

import requests
import urllib3

from lorapipe.core.cli import UserError, log, progress
from lorapipe.core.credentials import HOW_TO_GIVE_CREDENTIALS, PASSWORD_ENV, TOKEN_ENV, USER_ENV, redact
from lorapipe.core.outputs import sha256_of, storage_errors_named

CHUNK = 1 << 20


class CorruptDownload(UserError):
    """The fetched bytes are wrong (checksum, damaged zip): a partial download of them must not be resumed."""


_DRIVE_ID = re.compile(r"drive\.google\.com/(?:file/d/|open\?id=|uc\?(?:.*&)?id=)([\w-]+)")


def resolve_source(url: str) -> str | Path:
    """A local Path for paths and file:// URLs, a direct download URL for http(s)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else url)
    if parsed.scheme not in ("http", "https"):
        raise UserError(f"data.url: expected an https URL, a local path or file://, got scheme '{parsed.scheme}'")
    drive = _DRIVE_ID.search(url)
    if drive:  # `confirm=t` skips Drive's "can't scan this large file for viruses" page
        return f"https://drive.usercontent.google.com/download?id={drive.group(1)}&export=download&confirm=t"
    return url


class _Bearer(requests.auth.AuthBase):
    """`Authorization: Bearer <token>`; requests drops it on a redirect to another host."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def download_auth() -> requests.auth.AuthBase | tuple[str, str] | None:
    """The download's credentials from the environment (never from data.url, which is recorded);
    None leaves requests to read ~/.netrc."""
    token, user = os.environ.get(TOKEN_ENV), os.environ.get(USER_ENV)
    if token and user:
        raise UserError(f"set {TOKEN_ENV} or {USER_ENV}/{PASSWORD_ENV} for the download, not both")
    if token:
        return _Bearer(token)
    if user:
        return (user, os.environ.get(PASSWORD_ENV, ""))
    return None


def download(url: str, part: Path, *, timeout: float, retries: int) -> Path:
    """Download `url` into `part`, resuming from what `part` already holds; returns `part`."""
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, timeout)
            return part
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            # A host whose name does not resolve, or that refuses the connection, answers a retry the same.
            if attempt == retries or _never_connected(err):
                raise UserError(_network_message(url, err, timeout)) from None
            reason = "timed out" if isinstance(err, requests.Timeout) else "connection lost"
            log.info(f"download interrupted ({reason}); resuming, try {attempt + 2} of {retries + 1}")
    return part  # pragma: no cover - the loop returns or raises


def _download_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    # identity: byte ranges must address the file itself, not a compressed transfer of it.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    with requests.get(url, headers=headers, stream=True, timeout=timeout, auth=download_auth()) as resp:
        if resp.status_code == 416 and have:  # the partial file already holds everything
            return
        if resp.status_code in (401, 403):
            raise UserError(
                f"download failed: HTTP {resp.status_code} {resp.reason} for {redact(url)}: the server wants "
                f"credentials or refused the ones given; {HOW_TO_GIVE_CREDENTIALS}"
            )
        if resp.status_code >= 400:
            raise UserError(f"download failed: HTTP {resp.status_code} {resp.reason} for {redact(url)}")
        if "text/html" in resp.headers.get("Content-Type", ""):
            raise UserError(
                f"download failed: {redact(url)} returned an HTML page, not the file (private link or "
                "quota exceeded?); download it by hand and set data.url to the local path"
            )
        resuming = resp.status_code == 206
        if not resuming:
            have = 0
        total = int(resp.headers.get("Content-Length", 0)) + have or None
        if resuming:
            log.info(f"resuming download at {have:,} bytes")
        # The partial file is resume state, not an output: a full disk or a file-size limit keeps what it
        # holds, for the rerun to go on from.
        with (
            storage_errors_named(part, "the bytes downloaded so far are kept: the rerun resumes from them"),
            open(part, "ab" if resuming else "wb") as out,
            progress(total=total, initial=have, unit="B", unit_scale=True, desc="download") as bar,
        ):
            try:
                # read1 hands over whatever arrived, so a dropped connection loses nothing already received.
                while chunk := resp.raw.read1(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except urllib3.exceptions.ReadTimeoutError:
                raise requests.Timeout("read timed out") from None
            except urllib3.exceptions.HTTPError as err:
                raise requests.ConnectionError(f"connection lost: {err}") from None
        if total and part.stat().st_size < total:
            raise requests.exceptions.ChunkedEncodingError("connection closed before the end of the file")


def _connect_error(err: Exception) -> Exception | None:
    """urllib3's reason a connection was never made (NameResolutionError, NewConnectionError), else None."""
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return reason if isinstance(reason, urllib3.exceptions.NewConnectionError) else None


def _never_connected(err: Exception) -> bool:
    return isinstance(err, requests.ConnectionError) and _connect_error(err) is not None


def _network_message(url: str, err: Exception, timeout: float) -> str:
    where, host = redact(url), urlparse(url).hostname
    if isinstance(err, requests.Timeout):
        return f"download failed: no answer from {where} within {timeout:g} s (ops.download_timeout_s)"
    reason = _connect_error(err)
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        cause = reason.__cause__ or reason.__context__  # the resolver's own words: [Errno -2] Name or service ...
        return f"download failed: name resolution failed for host {host} ({cause or 'unknown'}): offline, or a typo?"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        cause = reason.__cause__ or reason.__context__
        if isinstance(cause, ConnectionRefusedError):
            return f"download failed: connection refused by {urlparse(where).netloc}"
        return f"download failed: cannot connect to {urlparse(where).netloc} ({cause or reason})"
    return f"download failed: {where}: {type(err).__name__}"


def verify(path: Path, expected: str, label: str, key: str) -> str:
    """Return the file's sha256; on mismatch with the pinned `expected` (param `key`), fail naming both."""
    actual = sha256_of(path)
    if expected and actual != expected.lower():
        raise CorruptDownload(f"{label}: sha256 mismatch ({key}): expected {expected}, got {actual}")
    return actual


def copy_payload(source: Path, member: str, dest: Path) -> str:
    """Copy `source` to `dest`, or its `member` when `source` is a zip; returns what was taken."""
    with open(source, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # by content: a truncated zip has lost the directory that is_zipfile reads
    if not is_zip:
        shutil.copyfile(source, dest)
        return source.name
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
            if member not in names:
                shown = ", ".join(n for n in names if not n.endswith("/"))[:300]
                raise UserError(f"{source.name}: the zip has no member '{member}' (data.member); it holds: {shown}")
            with zf.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)  # checks the member's CRC-32 at its end
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise CorruptDownload(f"{source}: damaged or truncated zip ({err})") from None
    return member
