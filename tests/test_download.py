"""The download stage against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lorapipe.core.cli import UserError
from lorapipe.core.params import PARAM_FILES, DataParams, parse_section
from lorapipe.data.download import download, resolve_source
from tests.http_server import serve
from tests.workspace import (
    ROOT,
    assert_one_line_error,
    child_env,
    default_params,
    free_port,
    printed_and_written,
    write_param_files,
)

PAYLOAD = gzip.compress(b"".join(b'{"uid": "%d", "title": "t", "content": "c"}\n' % i for i in range(20000)), mtime=0)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def run_download(
    tmp_path: Path,
    url: str,
    sha256: str = "",
    member: str = "x",
    timeout: float = 5,
    retries: int = 0,
    env: dict[str, str] | None = None,
    file_size_limit: int | None = None,
):
    params = default_params()
    params["data"] = {"url": url, "sha256": sha256, "member": member}
    params["ops"] |= {"download_timeout_s": timeout, "download_retries": retries}
    write_param_files(tmp_path, params)

    def limit_file_size() -> None:  # `ulimit -f` in the child: Python ignores SIGXFSZ, so a write gets EFBIG
        if file_size_limit:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, str(ROOT / "stages/download.py"), "out/trn.json.gz", "metrics/download.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=child_env(**(env or {})),
        timeout=120,
        preexec_fn=limit_file_size,
    )


def test_download_success_verifies_checksum(tmp_path):
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        result = run_download(tmp_path, f"{server.url}/trn.json.gz", sha256=SHA)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/trn.json.gz").read_bytes() == PAYLOAD
    assert SHA in (tmp_path / "metrics/download.json").read_text()


def test_download_prints_checksum_to_pin_when_none_given(tmp_path):
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        result = run_download(tmp_path, f"{server.url}/trn.json.gz")
    assert result.returncode == 0 and f"sha256 {SHA}: pin it as data.sha256" in result.stderr


def test_interrupted_download_resumes_with_range_request(tmp_path):
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        server.drop_after = len(PAYLOAD) // 3
        result = run_download(tmp_path, f"{server.url}/trn.json.gz", sha256=SHA, retries=2)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    assert server.requests[0]["range"] is None
    assert server.requests[1]["range"] == f"bytes={len(PAYLOAD) // 3}-"
    assert (tmp_path / "out/trn.json.gz").read_bytes() == PAYLOAD


def test_partial_download_left_by_a_failed_run_resumes_on_the_next_run(tmp_path):
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        server.drop_after = len(PAYLOAD) // 2
        first = run_download(tmp_path, f"{server.url}/trn.json.gz", sha256=SHA, retries=0)
        assert_one_line_error(first, "download failed")
        assert not (tmp_path / "out/trn.json.gz").exists()  # nothing half-written in the output
        second = run_download(tmp_path, f"{server.url}/trn.json.gz", sha256=SHA)
    assert second.returncode == 0, second.stderr
    assert server.requests[-1]["range"] == f"bytes={len(PAYLOAD) // 2}-"
    assert (tmp_path / "out/trn.json.gz").read_bytes() == PAYLOAD


def test_404_is_one_line(tmp_path):
    with serve({}) as server:
        result = run_download(tmp_path, f"{server.url}/missing.json.gz")
    assert_one_line_error(result, "HTTP 404", "/missing.json.gz")


def test_500_is_one_line(tmp_path):
    with serve({}) as server:
        result = run_download(tmp_path, f"{server.url}/status/500")
    assert_one_line_error(result, "HTTP 500")


def test_checksum_mismatch_discards_the_file(tmp_path):
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        result = run_download(tmp_path, f"{server.url}/trn.json.gz", sha256="0" * 64)
    assert_one_line_error(result, "sha256 mismatch (data.sha256)", "expected " + "0" * 64, f"got {SHA}")
    assert not (tmp_path / "out/trn.json.gz").exists()
    assert not list((tmp_path / ".cache/download").glob("*.part"))


BIG = random.Random(0).randbytes(1 << 20)  # incompressible: it fills what a 256 KiB disk or limit holds


def assert_partial_download_kept(part_folder: Path, result: subprocess.CompletedProcess, why: str) -> None:
    """One line naming the .part file and why; the bytes received so far are kept for the rerun to resume
    from, and no output or metrics file is written."""
    [part] = part_folder.glob("*.part")
    assert_one_line_error(result, f".cache/download/{part.name}: not written: ", why, "the rerun resumes from them")
    assert 0 < part.stat().st_size < len(BIG) and BIG.startswith(part.read_bytes())
    workspace = part_folder.parents[1]  # <workspace>/.cache/download
    assert not (workspace / "out").exists() and not (workspace / "metrics").exists()


def test_a_full_disk_while_downloading_is_one_line_and_keeps_what_arrived(tmp_path, small_disk):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache/download").symlink_to(small_disk)  # the download's partial file lands on the tmpfs
    with serve({"/big.bin": BIG}) as server:
        result = run_download(tmp_path, f"{server.url}/big.bin")
    assert_partial_download_kept(tmp_path / ".cache/download", result, "no space left on the device")


def test_a_file_size_limit_while_downloading_is_one_line_and_keeps_what_arrived(tmp_path):
    with serve({"/big.bin": BIG}) as server:
        result = run_download(tmp_path, f"{server.url}/big.bin", file_size_limit=256 << 10)
    assert_partial_download_kept(tmp_path / ".cache/download", result, "file-size limit")


def test_connection_refused_is_one_line(tmp_path):
    result = run_download(tmp_path, f"http://127.0.0.1:{free_port()}/trn.json.gz")
    assert_one_line_error(result, "connection refused")


def test_a_host_that_does_not_resolve_is_named_once_and_not_retried(tmp_path):
    # .invalid never resolves (RFC 2606), online or off: retrying cannot help, and the error says why.
    result = run_download(tmp_path, "http://lorapipe-test.invalid/trn.json.gz", retries=3)
    assert_one_line_error(result, "name resolution failed for host lorapipe-test.invalid")
    assert "resuming" not in result.stderr and "interrupted" not in result.stderr


def test_refused_connection_is_not_retried(tmp_path):
    result = run_download(tmp_path, f"http://127.0.0.1:{free_port()}/trn.json.gz", retries=3)
    assert_one_line_error(result, "connection refused")
    assert "resuming" not in result.stderr


def test_timeout_is_one_line(tmp_path):
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        server.stall_s = 3
        result = run_download(tmp_path, f"{server.url}/trn.json.gz", timeout=1)
    assert_one_line_error(result, "no answer", "within 1 s (ops.download_timeout_s)")


def test_zip_member_is_extracted(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("LF-Amazon-1.3M/trn.json.gz", PAYLOAD)
        zf.writestr("LF-Amazon-1.3M/tst.json.gz", b"other")
    with serve({"/raw.zip": buf.getvalue()}) as server:
        ok = run_download(tmp_path, f"{server.url}/raw.zip", member="LF-Amazon-1.3M/trn.json.gz")
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "out/trn.json.gz").read_bytes() == PAYLOAD
        bad = run_download(tmp_path, f"{server.url}/raw.zip", member="trn.json.gz")
    assert_one_line_error(bad, "no member 'trn.json.gz'", "LF-Amazon-1.3M/tst.json.gz")


def stored_zip(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("LF-Amazon-1.3M/trn.json.gz", payload)
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["bad CRC", "truncated"])
def test_a_damaged_zip_is_one_line_and_not_kept_for_resuming(tmp_path, damage):
    data = stored_zip(PAYLOAD)
    if damage == "bad CRC":
        at = data.index(PAYLOAD) + 10
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    else:
        data = data[: len(data) // 2]
    with serve({"/raw.zip": data}) as server:
        result = run_download(tmp_path, f"{server.url}/raw.zip", member="LF-Amazon-1.3M/trn.json.gz")
    assert_one_line_error(result, "damaged or truncated zip", "the download was discarded")
    assert not (tmp_path / "out/trn.json.gz").exists()
    assert not list((tmp_path / ".cache/download").glob("*.part"))


def test_local_path_and_file_url(tmp_path):
    src = tmp_path / "local.json.gz"
    src.write_bytes(PAYLOAD)
    for url in (str(src), f"file://{src}"):
        result = run_download(tmp_path, url, sha256=SHA)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out/trn.json.gz").read_bytes() == PAYLOAD
    missing = run_download(tmp_path, str(tmp_path / "nope.json.gz"))
    assert_one_line_error(missing, "not found")


@pytest.mark.parametrize(
    "link",
    [
        "https://drive.google.com/file/d/12zH4mL2RX8iSvH0VCNnd3QxO4DzuHWnK/view?usp=sharing",
        "https://drive.google.com/open?id=12zH4mL2RX8iSvH0VCNnd3QxO4DzuHWnK",
        "https://drive.google.com/uc?export=download&id=12zH4mL2RX8iSvH0VCNnd3QxO4DzuHWnK",
    ],
)
def test_google_drive_share_links_become_direct_downloads(link):
    assert resolve_source(link) == (
        "https://drive.usercontent.google.com/download?id=12zH4mL2RX8iSvH0VCNnd3QxO4DzuHWnK&export=download&confirm=t"
    )


def test_other_schemes_are_refused():
    with pytest.raises(UserError, match="scheme 'ftp'"):
        resolve_source("ftp://example.org/trn.json.gz")


def test_html_page_instead_of_file_is_refused(tmp_path):
    with serve({"/page": b"<html>quota exceeded</html>"}) as server:
        server.content_type = "text/html; charset=utf-8"  # what Drive answers for a private file
        with pytest.raises(UserError, match="returned an HTML page"):
            download(f"{server.url}/page", tmp_path / "x.part", timeout=5, retries=0)


# Built at run time, so no credential-shaped string sits in a tracked file.
TOKEN, PASSWORD = "tok" + "EN" * 8 + "0123", "pass" + "WORD" * 4 + "4567"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("/trn.json.gz?token={secret}", "?token="),
        ("/trn.json.gz?access_token={secret}&format=gz", "?access_token="),
        ("/trn.json.gz?X-Amz-Credential={secret}&X-Amz-Signature={secret}", "?X-Amz-Signature="),
        ("/trn.json.gz?sv=2024&sig={secret}", "?sig="),
        ("/trn.json.gz#api_key={secret}", "#api_key="),
    ],
)
def test_credentials_in_data_url_are_refused_before_anything_is_fetched(tmp_path, url, part):
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        result = run_download(tmp_path, server.url + url.format(secret=TOKEN))
        userinfo = run_download(tmp_path, server.url.replace("://", f"://alice:{PASSWORD}@") + "/trn.json.gz")
    assert_one_line_error(result, "data.url holds credentials", part, "LORAPIPE_DATA_TOKEN", "~/.netrc")
    assert_one_line_error(userinfo, "data.url holds credentials (user:password@)", "LORAPIPE_DATA_USER")
    assert server.requests == []
    assert TOKEN not in printed_and_written(tmp_path, result, leave_out=PARAM_FILES) and PASSWORD not in userinfo.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics").exists()


def test_the_real_runs_share_link_is_no_credential():
    real = default_params()["data"]  # the real run's Google Drive share link
    assert parse_section(DataParams, real).url == real["url"]  # its ?usp=sharing is not one


def test_credentials_from_the_environment_reach_the_server_and_nowhere_else(tmp_path):
    bearer = {"LORAPIPE_DATA_TOKEN": TOKEN}
    basic = {"LORAPIPE_DATA_USER": "alice", "LORAPIPE_DATA_PASSWORD": PASSWORD}
    with serve({"/trn.json.gz": PAYLOAD}) as server:
        url = f"{server.url}/trn.json.gz"
        server.authorization = f"Bearer {TOKEN}"
        refused = run_download(tmp_path, url)
        assert_one_line_error(refused, "HTTP 401", "LORAPIPE_DATA_TOKEN", "~/.netrc")
        with_token = run_download(tmp_path, url, sha256=SHA, env=bearer)
        assert with_token.returncode == 0, with_token.stderr
        assert TOKEN not in printed_and_written(tmp_path, with_token, leave_out=PARAM_FILES)
        (tmp_path / "out/trn.json.gz").unlink()
        server.authorization = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        with_password = run_download(tmp_path, url, sha256=SHA, env=basic)
        assert with_password.returncode == 0, with_password.stderr
        both = run_download(tmp_path, url, env={**bearer, **basic})
    assert (tmp_path / "out/trn.json.gz").read_bytes() == PAYLOAD
    assert PASSWORD not in printed_and_written(tmp_path, with_password, leave_out=PARAM_FILES)
    assert_one_line_error(both, "not both")
