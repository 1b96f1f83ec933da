"""The adapter's record of what was trained: written by train, read back validated."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from lorapipe.core.cli import UserError
from lorapipe.core.params import LoraParams, QuantParams, TrainParams
from lorapipe.train.training_record import (
    ADAPTER_FILES,
    RECORD_FILE,
    TrainingRecord,
    load_training_record,
    save_training_record,
)
from tests.workspace import default_params, params_of


@pytest.fixture
def adapter(tmp_path):
    for name in ADAPTER_FILES:  # load_training_record checks they exist; their content is peft's business
        (tmp_path / name).write_bytes(b"{}")
    return tmp_path


def test_a_saved_run_loads_back_equal(adapter):
    run = TrainingRecord(
        params_of(TrainParams, max_steps=12, lr=0.002),
        params_of(LoraParams, r=8, target_modules=("q_proj",)),
        params_of(QuantParams, bits=8),
    )
    save_training_record(adapter, run)
    assert load_training_record(adapter) == run


def test_a_folder_without_trained_weights_is_one_clear_error(tmp_path, adapter):
    with pytest.raises(UserError, match=re.escape("nothing trained (train_params.json missing); run the train")):
        load_training_record(tmp_path / "models/trained")
    full = TrainingRecord(params_of(TrainParams), params_of(LoraParams, method="full"), params_of(QuantParams, bits=16))
    save_training_record(adapter, full)  # a full fine-tune's record beside an adapter's files
    with pytest.raises(UserError, match=re.escape("no trained fully fine-tuned model (config.json, model.safetensors")):
        load_training_record(adapter)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"quant": {"bits": 4}}', "expected the sections train, lora, quant; found quant"),
        ({"lora": {"r": 0}}, "'lora.r' must be >= 1, got 0"),
        ({"train": {"lrr": 1}}, "unknown key 'train.lrr'; did you mean 'train.lr'?"),
        ({"quant": {"bits": None}}, "'quant.bits' must be an integer"),
        ('{"train": {}, "lora": {}, "quant": {}}', "missing 'train.epochs', 'train.max_steps'"),
        ({"lora": {"method": "full"}}, "lora.method full trains every weight in 16/32-bit and needs quant.bits 16"),
    ],
)
def test_a_bad_record_names_the_file_and_the_problem(adapter, record, message):
    if isinstance(record, dict):  # a saved record of the defaults with these keys changed
        sections = {name: dict(default_params()[name], **record.get(name, {})) for name in ("train", "lora", "quant")}
        record = json.dumps(sections)
    (adapter / RECORD_FILE).write_text(record)
    with pytest.raises(UserError) as err:
        load_training_record(adapter)
    assert str(adapter / RECORD_FILE) in str(err.value) and message in str(err.value)


def test_the_record_is_plain_json_a_reader_can_diff(adapter):
    save_training_record(adapter, TrainingRecord(params_of(TrainParams), params_of(LoraParams), params_of(QuantParams)))
    record = json.loads((adapter / RECORD_FILE).read_text())
    assert record["lora"]["target_modules"] == list(params_of(LoraParams).target_modules)
    assert set(record) == {"train", "lora", "quant"}


def test_a_record_written_before_lora_method_existed_reads_as_the_lora_adapter_it_is(adapter):
    """The train_params.json of a run before lora.method (`dvc exp apply` of an old experiment brings one back):
    evaluate, export, publish and the app all load it through load_training_record."""
    shutil.copy(Path(__file__).parent / "data/train_params_before_lora_method.json", adapter / RECORD_FILE)
    assert "method" not in json.loads((adapter / RECORD_FILE).read_text())["lora"]
    record = load_training_record(adapter)
    assert record.lora == params_of(LoraParams, method="lora", r=16, alpha=32.0)
    assert record.train.max_steps == 12 and record.quant.bits == 4
