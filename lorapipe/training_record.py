"""The record of what was trained, saved beside the adapter (train_params.json) and read back
validated like params.yaml: evaluate, export, the app and the model card describe the adapter they
load, not whatever params.yaml says now."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from lorapipe.cli import UserError
from lorapipe.outputs import write_json
from lorapipe.params import SECTIONS, LoraParams, QuantParams, TrainParams, parse_section

RECORD_FILE = "train_params.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what peft's save_pretrained writes


@dataclass(frozen=True)
class TrainingRecord:
    train: TrainParams
    lora: LoraParams
    quant: QuantParams


CLASSES = {field.name: SECTIONS[field.name] for field in dataclasses.fields(TrainingRecord)}  # params.yaml's sections


def save_training_record(adapter: Path, record: TrainingRecord) -> None:
    """Write the record into an adapter folder (the train stage's temp folder, before it is renamed)."""
    write_json(adapter / RECORD_FILE, {name: dataclasses.asdict(getattr(record, name)) for name in CLASSES})


def load_training_record(adapter: Path) -> TrainingRecord:
    """The adapter's record; one clear error when the folder holds no trained adapter or a bad record."""
    missing = [name for name in (*ADAPTER_FILES, RECORD_FILE) if not (adapter / name).is_file()]
    if missing:
        raise UserError(
            f"{adapter}: no trained adapter ({', '.join(missing)} missing); run the train stage (dvc repro train)"
        )
    path = adapter / RECORD_FILE
    try:
        raw = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict) or set(raw) != set(CLASSES):
        found = ", ".join(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise UserError(f"{path}: expected the sections {', '.join(CLASSES)}; found {found or 'none'}")
    return TrainingRecord(**{name: parse_section(cls, raw[name], source=str(path)) for name, cls in CLASSES.items()})


def training_record_from(params: dict) -> TrainingRecord:
    """The record a params.yaml's sections describe (every key set, or UserError), to compare with a record."""
    return TrainingRecord(**{name: parse_section(cls, params.get(name) or {}) for name, cls in CLASSES.items()})
