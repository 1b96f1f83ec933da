"""Reliability: a stage killed mid-write never leaves a half-written output for DVC to cache."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lorapipe.core.outputs import atomic_dir, atomic_path
from tests.workspace import (
    ROOT,
    assert_one_line_error,
    child_env,
    stage,
    stage_args,
    tree_state,
    wait_for,
    write_params,
)


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_atomic_dir_keeps_the_old_folder_when_the_writer_fails(tmp_path):
    target = tmp_path / "split"
    target.mkdir()
    (target / "train.parquet").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "train.parquet").write_text("half")
        raise RuntimeError("crash")
    assert (target / "train.parquet").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_sigkill_during_clean_leaves_the_previous_output_intact(tmp_path):
    (tmp_path / "data").mkdir()
    write_params(tmp_path)
    lines = (json.dumps({"title": f"Product {i}", "content": "words " * 60}).encode() for i in range(400_000))
    (tmp_path / "data/raw.json.gz").write_bytes(gzip.compress(b"\n".join(lines), compresslevel=1, mtime=0))
    out = tmp_path / "data/clean.parquet"
    out.write_bytes(b"previous complete output")
    args = [
        sys.executable,
        str(ROOT / "stages/clean.py"),
        "data/raw.json.gz",
        "data/clean.parquet",
        "data/r.jsonl",
        "m.json",
        "n.jsonl",
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, env=child_env(), stderr=subprocess.DEVNULL)
    wait_for(lambda: list((tmp_path / "data").glob(".clean.parquet.*.tmp")), timeout=60, proc=proc, every=0.01)
    time.sleep(0.3)  # well into the write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.read_bytes() == b"previous complete output"
    # What the killed writer left is ignored by git and removed by the next run.
    (leftover,) = (tmp_path / "data").glob(".clean.parquet.*.tmp")
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", f"data/{leftover.name}"], cwd=ROOT)
    assert ignored.returncode == 0
    subprocess.run(args, cwd=tmp_path, env=child_env(), check=True, capture_output=True)
    assert not list((tmp_path / "data").glob(".clean.parquet.*.tmp"))


def test_a_dead_writers_temp_folder_is_swept_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / ".tokenized.4194305.x1.tmp"  # above Linux's largest pid: no such process
    live = tmp_path / f".tokenized.{os.getpid()}.x2.tmp"
    for folder in (dead, live):
        (folder / "train.parquet").parent.mkdir()
        (folder / "train.parquet").write_text("half")
    with atomic_dir(tmp_path / "tokenized") as tmp:
        (tmp / "train.parquet").write_text("whole")
    assert not dead.exists() and live.exists()
    assert (tmp_path / "tokenized/train.parquet").read_text() == "whole"


def test_a_full_disk_is_one_line_naming_the_output_and_keeps_the_previous_one(tmp_path, small_disk):
    (tmp_path / "data").mkdir()
    write_params(tmp_path)
    rng = random.Random(0)  # descriptions that do not compress: the output outgrows the disk
    lines = (json.dumps({"title": f"Product {i}", "content": rng.randbytes(150).hex()}).encode() for i in range(5000))
    (tmp_path / "data/raw.json.gz").write_bytes(gzip.compress(b"\n".join(lines), mtime=0))
    out = small_disk / "clean.parquet"
    out.write_bytes(b"previous complete output")
    args = [
        sys.executable,
        str(ROOT / "stages/clean.py"),
        "data/raw.json.gz",
        str(out),
        "data/r.jsonl",
        "m.json",
        "n.jsonl",
    ]
    result = subprocess.run(args, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert_one_line_error(result, f"{out}: not written: no space left on the device")
    assert out.read_bytes() == b"previous complete output"
    assert [p.name for p in small_disk.iterdir()] == ["clean.parquet"]  # the temp file is gone, space is back


def test_a_file_size_limit_while_saving_the_adapter_is_one_line_and_keeps_the_previous_one(tuned_copy):
    """RLIMIT_FSIZE (`ulimit -f`) below the adapter's size: Python ignores SIGXFSZ, so the write fails with EFBIG."""
    adapter = tuned_copy / "models/trained"
    before = tree_state(adapter)
    # A forced rerun trains again and saves checkpoints first: the limit lets every checkpoint file through
    # and stops the adapter folder's largest file, the tokenizer.
    checkpoint_files = [f for f in (tuned_copy / "models/checkpoints").rglob("*") if f.is_file()]
    limit = max(f.stat().st_size for f in checkpoint_files) * 2
    assert limit < (adapter / "tokenizer.json").stat().st_size

    result = stage(tuned_copy, "train.py", *stage_args("train"), check=False, limits={"RLIMIT_FSIZE": limit})
    assert_one_line_error(result, "models/trained: not written", "file-size limit")
    assert tree_state(adapter) == before
