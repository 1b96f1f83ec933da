"""Fetch the raw AmazonTitles dump (or any file in its schema) and pin its checksum.

Paths: the command line of dvc.yaml's `download` stage (`--help` names each).

`data.url` may be an https URL, a Google Drive share link, a local path or file://. An
interrupted download resumes from `.cache/download/` on the next run. A server that wants
credentials gets them from the environment (a bearer token or basic auth: lorapipe/core/credentials.py)
or ~/.netrc, never from data.url, which dvc.lock records.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.credentials import redact
from lorapipe.core.outputs import atomic_path, write_json
from lorapipe.core.params import DataParams, OpsParams, check_params_unchanged, load_params
from lorapipe.data.download import CorruptDownload, copy_payload, download, resolve_source, verify

CACHE = Path(".cache/download")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where the dataset file goes")
    parser.add_argument("metrics", type=Path)
    args = parser.parse_args()
    params = load_params(DataParams)
    ops = load_params(OpsParams)

    started = time.perf_counter()
    source = resolve_source(params.url)
    if isinstance(source, Path):
        if not source.is_file():
            raise UserError(f"data.url: local file {source} not found")
        fetched, label = source, str(source)
    else:
        part = CACHE / (hashlib.sha256(source.encode()).hexdigest()[:16] + ".part")
        fetched = download(source, part, timeout=ops.download_timeout_s, retries=ops.download_retries)
        label = redact(source)
    check_params_unchanged()
    try:
        digest = verify(fetched, params.sha256, label, "data.sha256")
        with atomic_path(args.out) as tmp:
            taken = copy_payload(fetched, params.member, tmp)
    except CorruptDownload as err:
        if fetched is source:
            raise
        fetched.unlink(missing_ok=True)  # resuming it would keep the bad bytes
        raise UserError(f"{err}; the download was discarded, rerun to fetch it again") from None
    if not params.sha256:
        log.info(f"sha256 {digest}: pin it as data.sha256 in params.yaml")
    write_json(
        args.metrics,
        {
            "source": label,
            "sha256": digest,
            "bytes": fetched.stat().st_size,
            "file": taken,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    log.info(f"downloaded {label} ({fetched.stat().st_size:,} bytes) -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
