"""clean + sample + split on a generated dirty file: what they keep is pinned, and follows the per-line rules.

The digests were taken from the stage scripts as they were before the batched fast path
(one `parse_line` per line, `dedupe` over every row): the fast path must keep exactly the
same rows, in the same order, with the same splits and the same counts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from scripts.make_synthetic_data import dump_shaped
from tests.workspace import ROOT, child_env, stage, write_params

PINNED = {
    "clean.parquet": "e4c4fd28d2f661cc222c71f8a58cef0633d22c9cb02be550c5ca2a1bfd3c773d",
    "rejects.jsonl": "65348a3ebb0ce36531b2eb41d0e2c55d7cbeffa292acfae954bba1a67d79b3e9",
    "sample.parquet": "338da2e16e415513e19dff249acfce5e2bb8f0ace5485afef95e259e740c61b2",
    "split/train.parquet": "d632444d02b9fe23984345d6db11ef4a6bdcaf728288c43696e9a346b1ede429",
    "split/val.parquet": "733ed7f2d26bd379bc8e75c39ecc34de51f0d39a8f36b814bb489f922f521b98",
    "split/test.parquet": "e86ba01ad4e8d2c9731052811a252289e498522853396dec11cb0e46bb78b90b",
    "clean.json": "030e4acd55cfe108aa9f76aff5657d0dea9a155be48bafc78746c99bf32abb30",
    "sample.json": "9eab224b4b122e031025c9d75080e9e927d1bbdbc4dca88069362088f9d7a957",
    "split.json": "cae337c6bec345cd32e043ecd5f95ccbd8e3d1d8a289900a4d901126f4710966",
}

# Lines that take every path: entities, non-ASCII, invisible characters, lone surrogates,
# whitespace runs, every malformed kind, and duplicates (exact, same title, same normalised title).
ODD_RECORDS = [
    {"title": "Mug &amp; Lid", "content": "It&#8217;s   a\tmug\n&amp;amp; lid, dishwasher safe."},
    {"title": "ＵＳＢ Cable 2m", "content": "Full-width ｆｏｒｍｓ fold, café, naïve, \u00a0nbsp\u2003em space."},
    {"title": "Zero\u200bWidth Lamp", "content": "bidi \u202emarks\u202c and bom\ufeff removed everywhere here"},
    {"title": "Bell\x07 Lamp", "content": "control\x01chars\x1f and\x7f del, \x85next line, tab\tend  "},
    {"title": "Lone \ud800 Surrogate Kit", "content": "a lone surrogate \udfff is dropped from the text"},
    {"title": "mug & lid", "content": "Same product once normalised: case and punctuation ignored."},
    {"title": "Mug &amp; Lid", "content": "It&#8217;s   a\tmug\n&amp;amp; lid, dishwasher safe."},
    {"title": "  ", "content": "a title of spaces only is empty once cleaned"},
    {"title": "ok", "content": "title too short to keep it"},
    {"title": "Long " * 80, "content": "title too long to keep it at all"},
    {"title": "Tiny Desc Item", "content": "short"},
    {"title": "Huge Desc Item", "content": "word " * 1200},
    {"title": "Empty Desc Item", "content": " \u200b "},
    {"title": 12, "content": "title of the wrong type"},
    {"content": "no title at all in this record"},
    {"title": "Null Content", "content": None},
]
BAD_LINES = [b"{not json\n", b"[1, 2, 3]\n", b'{"title": "caf\xe9", "content": "latin-1"}\n', b"\n"]


def dirty_file(path: Path) -> None:
    """Random real-shaped records with the odd ones and bad lines scattered through (two gzip members)."""
    dump_shaped(path, 6000, seed=3)
    rng = random.Random(5)
    # Half of them with non-ASCII written as \\uXXXX escapes, as some dumps do (lone surrogates can only be).
    lines = [
        json.dumps({"uid": f"odd{i}", **r}, ensure_ascii=i % 2 == 0 or "Surrogate" in str(r.get("title"))).encode()
        for i, r in enumerate(ODD_RECORDS * 40)
    ]
    lines = [line + b"\n" for line in lines]
    lines += BAD_LINES * 10
    rng.shuffle(lines)
    with open(path, "ab") as f:
        f.write(gzip.compress(b"".join(lines)))


def table_digest(path: Path) -> str:
    return hashlib.sha256(orjson.dumps(pq.read_table(path).to_pylist())).hexdigest()


def file_digest(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".json":
        record = orjson.loads(data)
        record.pop("seconds", None)
        data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def dirty_data_outputs(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("prep")
    dirty_file(ws / "trn.json.gz")
    write_params(ws, sample={"size": 2000, "seed": 11}, split={"seed": 3})
    stage(ws, "clean.py", "trn.json.gz", "clean.parquet", "rejects.jsonl", "clean.json", "near_limits.jsonl")
    stage(ws, "sample.py", "clean.parquet", "sample.parquet", "sample.json")
    stage(ws, "split.py", "sample.parquet", "split", "split.json", "test_ids.txt")
    return ws


def test_outputs_match_the_pinned_digests(dirty_data_outputs):
    digests = {
        name: table_digest(dirty_data_outputs / name)
        if name.endswith(".parquet")
        else file_digest(dirty_data_outputs / name)
        for name in PINNED
    }
    assert digests == PINNED


if __name__ == "__main__":  # print fresh digests (only when the rules change on purpose)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        dirty_file(ws / "trn.json.gz")
        write_params(ws, sample={"size": 2000, "seed": 11}, split={"seed": 3})
        for script, *args in (
            ("clean.py", "trn.json.gz", "clean.parquet", "rejects.jsonl", "clean.json", "near_limits.jsonl"),
            ("sample.py", "clean.parquet", "sample.parquet", "sample.json"),
            ("split.py", "sample.parquet", "split", "split.json", "test_ids.txt"),
        ):
            subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=ws, check=True)
        for name in PINNED:
            path = ws / name
            print(f'    "{name}": "{table_digest(path) if name.endswith(".parquet") else file_digest(path)}",')


def test_stages_log_their_time_and_memory_when_asked(dirty_data_outputs, tmp_path, monkeypatch, capsys):
    from lorapipe.core.timings import run_timed

    monkeypatch.chdir(dirty_data_outputs)
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])  # run_timed's child inherits os.environ
    log = tmp_path / "timings.jsonl"
    outs = [str(tmp_path / "split"), str(tmp_path / "split.json"), str(tmp_path / "test_ids.txt")]
    command = [sys.executable, str(ROOT / "stages/split.py"), "sample.parquet", *outs]
    assert run_timed(command, log) == 0
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["step"] == "split" and 0 < entry["seconds"] < 60 and entry["peak_mib"] > 50
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith("split") and table[2].startswith("dvc") and table[3].startswith("total")
    # Without the variable, stages write no log at all.
    monkeypatch.delenv("LORAPIPE_TIMINGS", raising=False)
    subprocess.run(command, check=True, capture_output=True)
    assert len(log.read_text().splitlines()) == 1


def test_a_quiet_dvc_run_that_fails_names_the_command_that_says_why(tmp_path, monkeypatch, capsys):
    """make demo runs `dvc repro -q`, which prints none of DVC's own errors (here: a dvc.yaml that is no YAML);
    the line after the timing table names the command that does."""
    from lorapipe.core.timings import run_timed

    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, check=True, env=child_env())
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: echo a: b\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    code = run_timed(["dvc", "repro", "-q"], tmp_path / "timings.jsonl")
    said = capsys.readouterr().err
    assert code != 0 and said == f"error: dvc repro -q failed (exit {code}); `dvc repro` says why in DVC's words\n"
