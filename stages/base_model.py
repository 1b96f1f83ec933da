"""Resolve `model.name` into a local, versioned model folder (safetensors + tokenizer).

Paths: the command line of dvc.yaml's `base_model` stage (`--help` names each).

`model.name` is a Hugging Face hub id (downloaded at `model.revision`, safetensors only), a
local Hugging Face folder, or a local `.gguf` file (dequantized, then saved as safetensors).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.outputs import atomic_dir, write_json
from lorapipe.core.params import ModelParams, check_params_unchanged, load_params
from lorapipe.data.download import verify

# What a model folder needs; weights only as safetensors, never pickles.
MODEL_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
]


def from_gguf(path: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain transformers model saved as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lorapipe.model.modeling import without_loading_options

    folder, name = path.parent, path.name
    try:
        tokenizer = without_loading_options(AutoTokenizer.from_pretrained(folder, gguf_file=name))
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as err:  # the GGUF reader raises anything on a damaged file: name the file instead
        reason = (str(err).splitlines() or [""])[0][:150]
        raise UserError(
            f"model.name: {path} is not a readable GGUF model (truncated or damaged? pin model.sha256): "
            f"{type(err).__name__}: {reason}"
        ) from None
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config.
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def copy_model_files(folder: Path, out: Path) -> None:
    copied = [f for pattern in MODEL_FILES for f in folder.glob(pattern)]
    if not any(f.suffix == ".safetensors" for f in copied):
        raise UserError(f"model.name: {folder} has no *.safetensors weights (pickled .bin weights are refused)")
    for f in copied:
        shutil.copyfile(f, out / f.name)


def local_path(name: str) -> Path | None:
    """`model.name` as a local path, or None for a hub id (`owner/name`)."""
    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", "~", ".")) or name.endswith(".gguf") or name.count("/") > 1:
        return path
    # `models/my-llama` looks like a hub id; a local `models/` folder says it is a path.
    return path if "/" in name and path.parent.is_dir() else None


def from_hub(name: str, revision: str, out: Path) -> str:
    """Download a hub model's safetensors and tokenizer; returns the resolved commit sha."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        folder = Path(snapshot_download(name, revision=revision or None, allow_patterns=MODEL_FILES))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as err:
        reason = str(err).splitlines()[0][:200]
        raise UserError(
            f"model.name: cannot fetch '{name}' from the Hugging Face Hub ({reason}); offline, use a local "
            "folder or .gguf file (profiles/offline.yaml)"
        ) from None
    copy_model_files(folder, out)
    return folder.name  # snapshot folders are named by commit sha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("metrics", type=Path)
    args = parser.parse_args()
    params = load_params(ModelParams)

    started = time.perf_counter()
    source = local_path(params.name)
    if source is not None and not source.exists():
        hint = " (make smollm2 fetches the demo's)" if source.suffix == ".gguf" else ""
        raise UserError(f"model.name: local path {source} not found{hint}; a hub id looks like owner/name")
    info = {"name": params.name}
    with atomic_dir(args.out) as tmp:
        if source is not None and source.suffix == ".gguf":
            info.update(kind="gguf", sha256=verify(source, params.sha256, str(source), "model.sha256"))
            from_gguf(source, tmp)
        elif source is not None and source.is_dir():
            info.update(kind="folder")
            copy_model_files(source, tmp)
        elif source is not None:
            raise UserError(f"model.name: {source} is neither a model folder nor a .gguf file")
        else:
            info.update(kind="hub", revision=from_hub(params.name, params.revision, tmp))
        size = sum(f.stat().st_size for f in tmp.iterdir())
        check_params_unchanged()
    info.update(bytes=size, seconds=round(time.perf_counter() - started, 1))
    write_json(args.metrics, info)
    log.info(f"base_model: {params.name} ({info['kind']}, {size / 1e6:,.0f} MB) -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
