"""Where the pipeline's files live: dvc.yaml's `paths` block, read once, plus the few outside DVC.

dvc.yaml names every file and folder a stage reads or writes once, in its top-level `vars: paths`
block, and its stages say `${paths.NAME}`; PATHS is that same block, so renaming an output there
moves every reader with it. Stages write where their command line tells them; the report, results
page, summary, model card, app and the samples readers take their default paths from here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lorapipe.core.stage_code import CODE_ROOT

DVC_YAML = CODE_ROOT / "dvc.yaml"
PATHS: dict[str, Path] = {
    name: Path(path) for name, path in yaml.safe_load(DVC_YAML.read_text())["vars"][0]["paths"].items()
}

DOWNLOAD_JSON = PATHS["download_json"]  # the raw file's source and sha256 (the card's data version)
BASE = PATHS["base"]  # the base model folder
BASE_MODEL_JSON = PATHS["base_model_json"]  # where models/base came from
LENGTHS_JSON = PATHS["lengths_json"]  # token length percentiles and budget cuts
TRAINED = PATHS["trained"]  # what train wrote: the adapter (or, lora.method full, the whole model), tokenizer, record
TRAIN_JSON = PATHS["train_json"]  # the headline losses (a DVC metric)
TRAIN_DETAILS = PATHS["train_details"]  # every figure of the training run
TRAIN_LOG = PATHS["train_log"]  # per-step loss and learning rate
VAL_LOG = PATHS["val_log"]
BASE_OUTPUTS = PATHS["base_outputs"]  # the base model's texts, decoded once by generate_base
EVAL_JSON = PATHS["eval_json"]  # the headline scores (a DVC metric)
EVAL_DETAILS = PATHS["eval_details"]  # base, tuned and delta: every score and output health
EVAL_SAMPLES = PATHS["eval_samples"]  # a few texts of both models
EVAL_SCORES = PATHS["eval_scores"]  # every sample's texts and scores
EVAL_RUN = PATHS["eval_run"]  # experiment name and MLflow run

# Not outputs of dvc.yaml. Resume state: an out would be hashed into dvc.lock and, being `persist`,
# would switch off the run-cache that restores the train stage.
CHECKPOINTS = Path("models/checkpoints")
# The export's outputs, written after a run by EXPORT_COMMAND outside DVC (models/ is git-ignored): a DVC
# stage that an experiment does not run would leave `dvc status` never clean, and a cached merged copy
# of every experiment would cost 2 GB each (TinyLlama); the merge takes seconds to redo.
EXPORT_COMMAND = "python stages/export.py"
MERGED = Path("models/merged")  # plain transformers model, the adapter merged in
GGUF = Path("models/gguf")  # llama.cpp files and the Ollama Modelfile
EXPORT_JSON = Path("models/export.json")  # sizes and seconds of the last export
EXPORT_OUTPUTS = (MERGED, GGUF, EXPORT_JSON)
