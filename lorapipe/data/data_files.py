"""Reading raw gzip JSON lines and the Parquet tables that data stages pass along."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from isal import igzip_threaded

from lorapipe.core.cli import UserError, progress

TEXT_SCHEMA = pa.schema([("title", pa.string()), ("content", pa.string())])


def iter_gzip_chunks(path: Path, desc: str = "read", block_bytes: int = 8 << 20) -> Iterator[list[bytes]]:
    """Yield the lines of a gzip file (without their newline) a few thousand at a time, with a
    progress bar over its compressed bytes.

    A file that is not gzip, or whose stream stops early, fails with one line naming it.
    """
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: empty file, expected gzip JSON lines")
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raise UserError(f"{path}: not a gzip file (expected gzip JSON lines such as trn.json.gz)")
        raw.seek(0)
        # One background thread decompresses while this one parses: about 2x on 2 cores.
        stream = igzip_threaded.open(raw, "rb", threads=1)
        lines = 0
        tail = b""
        try:
            with progress(total=size, unit="B", unit_scale=True, desc=desc) as bar:
                while block := stream.read(block_bytes):
                    chunk = (tail + block).split(b"\n")
                    tail = chunk.pop()  # the unfinished last line
                    lines += len(chunk)
                    bar.update(raw.tell() - bar.n)
                    yield chunk
                if tail:
                    yield [tail]
                bar.update(size - bar.n)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
            raise UserError(f"{path}: corrupt or truncated gzip after {lines:,} lines ({err})") from None
        finally:
            stream.close()


def open_text_table(path: Path) -> pq.ParquetFile:
    """Open a (title, content) Parquet table to read in parts, failing with one line if it is not one."""
    try:
        table = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise UserError(f"{path}: cannot read Parquet table ({err})") from None
    missing = {"title", "content"} - set(table.schema_arrow.names)
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return table


def read_text_table(path: Path) -> pa.Table:
    """Read a (title, content) Parquet table, failing with one line if it is not one."""
    table = open_text_table(path)
    try:
        return table.read()
    except (OSError, pa.ArrowInvalid) as err:
        raise UserError(f"{path}: cannot read Parquet table ({err})") from None


def write_table(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")
