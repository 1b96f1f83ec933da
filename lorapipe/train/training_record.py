"""The record of what was trained, saved in the train stage's folder (train_params.json) beside the
adapter or, with lora.method full, the whole model, and read back validated like params.yaml:
evaluate, export, the app and the model card describe the weights they load, not whatever params.yaml
says now."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lorapipe.core.cli import UserError
from lorapipe.core.outputs import json_object, write_json
from lorapipe.core.params import SECTIONS, LoraParams, QuantParams, TrainParams, check_method_and_bits, parse_section

RECORD_FILE = "train_params.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what peft's save_pretrained writes
MODEL_FILES = ("config.json", "model.safetensors")  # transformers' (one shard: train saves it so)
# What trained the weights of a record written before lora.method existed (`dvc exp apply` of an old
# experiment brings one back): a LoRA adapter, the only kind there was.
METHOD_BEFORE_IT_WAS_RECORDED = "lora"
METHOD_NAMES = {"lora": "LoRA", "dora": "DoRA", "rslora": "rsLoRA", "full": "full fine-tuning"}  # lora.method in words


def weight_files(method: str) -> tuple[str, str]:
    """The config and weights file a run of `lora.method` writes: a whole model's, or an adapter's."""
    return MODEL_FILES if method == "full" else ADAPTER_FILES


def what_is_trained(method: str) -> str:
    """In words, for messages and the card: a fully fine-tuned model, or a LoRA/DoRA/rsLoRA adapter."""
    return "fully fine-tuned model" if method == "full" else f"{METHOD_NAMES[method]} adapter"


@dataclass(frozen=True)
class TrainingRecord:
    train: TrainParams
    lora: LoraParams
    quant: QuantParams


CLASSES = {field.name: SECTIONS[field.name] for field in dataclasses.fields(TrainingRecord)}  # params.yaml's sections


def save_training_record(trained: Path, record: TrainingRecord) -> None:
    """Write the record into the train stage's temp folder, before it is renamed."""
    write_json(trained / RECORD_FILE, {name: dataclasses.asdict(getattr(record, name)) for name in CLASSES})


def load_training_record(trained: Path) -> TrainingRecord:
    """The record of the train stage's folder; one clear error when it holds no trained weights or a bad record."""
    path = trained / RECORD_FILE
    if not path.is_file():
        raise UserError(f"{trained}: nothing trained ({RECORD_FILE} missing); run the train stage (dvc repro train)")
    raw = json_object(path.read_bytes(), path)
    if set(raw) != set(CLASSES):
        found = ", ".join(map(str, raw))
        raise UserError(f"{path}: expected the sections {', '.join(CLASSES)}; found {found or 'none'}")
    if isinstance(raw["lora"], dict) and "method" not in raw["lora"]:
        raw["lora"] = {"method": METHOD_BEFORE_IT_WAS_RECORDED, **raw["lora"]}
    record = TrainingRecord(**{name: parse_section(cls, raw[name], source=str(path)) for name, cls in CLASSES.items()})
    check_method_and_bits(record.lora, record.quant, source=str(path))
    missing = [name for name in weight_files(record.lora.method) if not (trained / name).is_file()]
    if missing:
        raise UserError(
            f"{trained}: no trained {what_is_trained(record.lora.method)} ({', '.join(missing)} missing); "
            "run the train stage (dvc repro train)"
        )
    return record


def training_record_from(params: dict) -> TrainingRecord:
    """The record a params.yaml's sections describe (every key set, or UserError), to compare with a record."""
    return TrainingRecord(**{name: parse_section(cls, params.get(name) or {}) for name, cls in CLASSES.items()})
