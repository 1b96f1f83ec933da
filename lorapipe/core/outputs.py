"""Atomic writes: a crash never leaves a half-written output that DVC would cache.

Temp names carry the writer's pid (`.clean.parquet.<pid>.<random>.tmp`), so the next write
of the same output removes what a killed writer left behind, and only that.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from lorapipe.core.cli import UserError

# Write failures the user fixes on the machine, not in the pipeline: what to say about each.
STORAGE_ERRORS = {
    errno.ENOSPC: "no space left on the device (the disk is full); free some and rerun",
    errno.EDQUOT: "the disk quota is used up; free some and rerun",
    errno.EFBIG: "a file outgrew the file-size limit of this process (`ulimit -f`); raise it and rerun",
}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_leftovers(path: Path) -> None:
    """Remove the temp files/folders of `path` whose writer has died."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def storage_error(err: BaseException) -> int | None:
    """The errno of a full disk or a file-size limit behind `err` (raised by Python or pyarrow, or
    a Rust writer such as safetensors', which says `(os error 28)`), else None."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRORS:
            return seen.errno
        for code in STORAGE_ERRORS:
            if f"(os error {code})" in str(seen):
                return code
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def storage_errors_named(path: Path, kept: str = "what was there before is kept") -> Iterator[None]:
    """A full disk or file-size limit while writing `path` becomes one line naming it and saying what is
    `kept` (by the atomic writers: the earlier output, since nothing replaced it)."""
    try:
        yield
    except Exception as err:
        code = storage_error(err)
        if code is None:
            raise
        raise UserError(f"{path}: not written: {STORAGE_ERRORS[code]} ({kept})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        with storage_errors_named(path):
            yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with storage_errors_named(path):
            yield tmp
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, pretty-printed so `git diff` and `dvc metrics diff` read well."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def json_object(raw: bytes | str, where: str | Path) -> dict[str, Any]:
    """A JSON file's text that must hold an object (a record the pipeline wrote); bad JSON, JSON nested too deep
    for Python's parser or another JSON type is one error line naming `where`."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise UserError(f"{where}: not valid JSON ({str(err)[:200]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write JSON lines atomically, one object a line."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
