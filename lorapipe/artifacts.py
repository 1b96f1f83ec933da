"""The pipeline's metric, plot and sample files that something reads back: one name each.

Stages write where their command line in dvc.yaml tells them; the report, results page, summary,
model card and the samples readers take their default paths from here. tests/test_dvc_yaml.py
checks that every name here is an out, metric or plot of dvc.yaml, so renaming an output there
cannot silently leave a reader behind.
"""

from __future__ import annotations

from pathlib import Path

DOWNLOAD_JSON = Path("metrics/download.json")  # the raw file's source and sha256 (the card's data version)
BASE_MODEL_JSON = Path("metrics/base_model.json")  # where models/base came from
LENGTHS_JSON = Path("metrics/lengths.json")  # token length percentiles and budget cuts
TRAIN_JSON = Path("metrics/train.json")
TRAIN_LOG = Path("metrics/train_log.csv")  # per-step loss and learning rate
VAL_LOG = Path("metrics/val_log.csv")
EVAL_JSON = Path("metrics/eval.json")  # base, tuned and delta scores
EVAL_SAMPLES = Path("metrics/eval_samples.jsonl")  # a few texts of both models
EVAL_SCORES = Path("metrics/eval_scores.jsonl")  # every sample's texts and scores
EVAL_RUN = Path("metrics/eval_run.json")  # experiment name and MLflow run
BASE_MODEL = Path("models/base")
ADAPTER = Path("models/adapter")
# The export's outputs, written after a run by EXPORT_COMMAND outside DVC (models/ is git-ignored): a DVC
# stage that an experiment does not run would leave `dvc status` never clean, and a cached merged copy
# of every experiment would cost 2 GB each (TinyLlama); the merge takes seconds to redo.
EXPORT_COMMAND = "python stages/export.py"
MERGED = Path("models/merged")  # plain transformers model, the adapter merged in
GGUF = Path("models/gguf")  # llama.cpp files and the Ollama Modelfile
EXPORT_JSON = Path("models/export.json")  # sizes and seconds of the last export
EXPORT_OUTPUTS = (MERGED, GGUF, EXPORT_JSON)
