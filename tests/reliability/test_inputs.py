"""Reliability: bad input data and bad params end in one clear line, or a documented recovery.

Each test is one scenario of docs/reliability.md.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from lorapipe.core.artifacts import PATHS
from tests.workspace import assert_one_line_error, params_of, stage, stage_args, write_params

CLEAN_ARGS = stage_args("clean")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    write_params(tmp_path)
    return tmp_path


def write_raw(ws: Path, payload: bytes, *, compress: bool = True) -> None:
    (ws / PATHS["raw"]).parent.mkdir(parents=True, exist_ok=True)
    (ws / PATHS["raw"]).write_bytes(gzip.compress(payload, mtime=0) if compress else payload)


def good(i: int) -> bytes:
    return json.dumps({"uid": str(i), "title": f"Product {i}", "content": f"A fine product number {i}."}).encode()


def test_truncated_gzip(ws):
    data = gzip.compress(b"\n".join(good(i) for i in range(5000)), mtime=0)
    write_raw(ws, data[: len(data) // 2], compress=False)
    assert_one_line_error(stage(ws, "clean.py", *CLEAN_ARGS, check=False), "corrupt or truncated gzip")
    assert not (ws / PATHS["clean"]).exists()


def test_not_gzip(ws):
    write_raw(ws, b'{"title": "plain json"}\n', compress=False)
    assert_one_line_error(stage(ws, "clean.py", *CLEAN_ARGS, check=False), "not a gzip file")


def test_empty_file(ws):
    write_raw(ws, b"", compress=False)
    assert_one_line_error(stage(ws, "clean.py", *CLEAN_ARGS, check=False), "empty file")


def test_line_level_garbage_is_counted_not_fatal(ws):
    lines = [good(i) for i in range(50)] + [
        b'{"title": "caf\xe9", "content": "latin-1"}',  # non-UTF-8
        b"[1, 2, 3]",  # JSON, not an object
        b'{"title": 5, "content": "wrong type"}',
        b'{"uid": "no fields"}',
        b'{"title": "Gigantic", "content": "' + b"x" * 5_000_000 + b'"}',  # a 5 MB field
        b"{not json",
    ]
    write_raw(ws, b"\n".join(lines) + b"\n")
    result = stage(ws, "clean.py", *CLEAN_ARGS)
    metrics = json.loads((ws / PATHS["clean_json"]).read_text())
    assert metrics["kept"] == 50
    assert metrics["dropped"] == {
        "not_utf8": 1,
        "not_object": 1,
        "wrong_type": 1,
        "missing_field": 1,
        "content_too_long": 1,
        "bad_json": 1,
    }
    rejects = [json.loads(line) for line in (ws / PATHS["clean_rejects"]).read_text().splitlines()]
    assert {r["reason"] for r in rejects} == set(metrics["dropped"]) and all(len(r["text"]) <= 300 for r in rejects)
    assert "Traceback" not in result.stderr


def test_mostly_garbage_fails_with_the_threshold_named(ws):
    write_raw(ws, b"\n".join([b"garbage"] * 90 + [good(i) for i in range(10)]) + b"\n")
    result = stage(ws, "clean.py", *CLEAN_ARGS, check=False)
    assert_one_line_error(result, "90 of 100 lines are malformed", "clean.max_bad_fraction")
    assert (ws / PATHS["clean_rejects"]).is_file()  # examples are there to look at


def test_zero_records_left(ws):
    write_raw(ws, b"\n".join(json.dumps({"title": f"T{i} ok", "content": ""}).encode() for i in range(20)))
    assert_one_line_error(stage(ws, "clean.py", *CLEAN_ARGS, check=False), "no record left after cleaning")


@pytest.mark.parametrize(
    ("script", "args", "params", "fragment"),
    [
        ("clean.py", CLEAN_ARGS, {"clean": {"max_titel_chars": 9}}, "did you mean 'clean.max_title_chars'?"),
        ("train.py", stage_args("train"), {"lora": {"r": 0}}, "'lora.r' must be >= 1, got 0"),
        ("train.py", stage_args("train"), {"train": {"lr": -1e-4}}, "'train.lr' must be >= 0"),
        ("split.py", ("s", "o", "m.json", "t.txt"), {"split": {"test_size": 1.5}}, "'split.test_size' must be <= 0.9"),
        ("split.py", ("s", "o", "m.json", "t.txt"), {"split": {"test_size": 0.0}}, "split.test_size must be above 0"),
        ("sample.py", ("c", "o", "m.json"), {"sample": {"size": "many"}}, "'sample.size' must be an integer"),
        ("sample.py", ("c", "o", "m.json"), {"sample": {"seed": -1}}, "'sample.seed' must be >= 0, got -1"),
        ("split.py", ("s", "o", "m.json", "t.txt"), {"split": {"seed": -1}}, "'split.seed' must be >= 0, got -1"),
        (
            "generate_base.py",
            stage_args("generate_base"),
            {"eval": {"seed": 2**64}},
            f"'eval.seed' must be <= {2**64 - 1}",
        ),
        ("train.py", stage_args("train"), {"train": {"seed": 2**64}}, f"'train.seed' must be <= {2**64 - 1}"),
    ],
)
def test_bad_params_stop_the_stage_before_any_work(ws, script, args, params, fragment):
    write_params(ws, **params)
    assert_one_line_error(stage(ws, script, *args, check=False), fragment)


def test_missing_params_file(ws):
    os.remove(ws / "params.yaml")
    assert_one_line_error(stage(ws, "sample.py", "c", "o", "m.json", check=False), "params.yaml: not found")


def test_missing_input_file(ws):
    assert_one_line_error(stage(ws, "sample.py", "data/none.parquet", "o", "m.json", check=False), "data/none.parquet")


def test_base_model_refuses_pickled_weights(ws):
    folder = ws / "legacy-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    write_params(ws, model={"name": str(folder)})
    result = stage(ws, "base_model.py", *stage_args("base_model"), check=False)
    assert_one_line_error(result, "no *.safetensors weights", "refused")
    assert not (ws / PATHS["base"]).exists()


def test_a_repeated_section_is_refused_as_dvc_refuses_it(ws):
    text = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(text + "\nsample:\n  size: 5\n")
    result = stage(ws, "sample.py", "c", "o", "m.json", check=False)
    assert_one_line_error(result, "params.yaml: line", "duplicate key 'sample'")


@pytest.mark.parametrize("name", ["/no/such/model", "~/no-such-model-dir", "models/my-llama", "llama.gguf"])
def test_a_local_model_path_that_does_not_exist_is_named(ws, name):
    (ws / "models").mkdir()  # so `models/my-llama` is a path here, not a hub id
    write_params(ws, model={"name": name, "revision": "", "sha256": ""})
    result = stage(ws, "base_model.py", *stage_args("base_model"), check=False)
    assert_one_line_error(result, "model.name: local path", "not found")
    assert not (ws / PATHS["base"]).exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_gguf_is_named_when_no_checksum_is_pinned(ws, smollm2_gguf, damage):
    gguf = ws / "model.gguf"
    with open(smollm2_gguf, "rb") as f:
        gguf.write_bytes(os.urandom(4096) if damage == "garbage" else f.read(2_000_000))
    write_params(ws, model={"name": str(gguf), "revision": "", "sha256": ""})
    result = stage(ws, "base_model.py", *stage_args("base_model"), check=False)
    assert_one_line_error(result, f"model.name: {gguf} is not a readable GGUF model")
    assert not (ws / PATHS["base"]).exists()


@pytest.mark.parametrize("module", ["mlp", "input_layernorm", "embed_tokens"])
def test_lora_targets_that_are_not_linear_layers_are_named(tiny_model_dir, module):
    from transformers import AutoModelForCausalLM

    from lorapipe.core.cli import UserError
    from lorapipe.core.params import LoraParams
    from lorapipe.model.modeling import add_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(UserError, match=rf"lora.target_modules must name linear layers .*; {module} \("):
        add_lora(model, params_of(LoraParams, target_modules=("q_proj", module)), False, quantized=False)
