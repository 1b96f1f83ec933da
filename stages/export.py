"""Merge the adapter into the base: a plain model that loads without peft, and GGUF files for llama.cpp/Ollama.

    python stages/export.py    # after a run: models/base + models/trained -> models/merged, models/gguf

The adapter is merged into the base as training saw it (quantized, then dequantized; see
`load_tuned_model`) in fp32, then cast to `export.dtype` (`auto`: lorapipe.model.modeling.choose_dtype) and
saved as safetensors with the tokenizer and a generation config holding evaluate's decoding record, so
`AutoModelForCausalLM.from_pretrained("models/merged")` decodes as the evaluate stage did. A fully
fine-tuned model (lora.method full) has nothing to merge: it is loaded in fp32 and cast the same way.
llama.cpp's converter then writes the merged model as GGUF (`export.gguf_types`, f16 and q8_0 by
default) into models/gguf, with an Ollama Modelfile in the project's prompt format and that decoding.
Not a DVC stage (lorapipe/core/artifacts.py says why): it exports what the workspace's models/trained holds, anew each
time it runs.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from transformers import GenerationConfig

from lorapipe.core.artifacts import BASE, EXPORT_JSON, GGUF, MERGED, TRAINED
from lorapipe.core.cli import log, run_cli
from lorapipe.core.outputs import atomic_dir, write_json
from lorapipe.core.params import EvalParams, ExportParams, check_params_unchanged, load_params
from lorapipe.model.decoding import decoding_record
from lorapipe.model.gguf_export import converter, write_gguf
from lorapipe.model.modeling import dtype_name, load_tokenizer, load_tuned_model, pick_device, pick_dtype
from lorapipe.train.training_record import load_training_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BASE, help="the base model (default: %(default)s)")
    parser.add_argument(
        "--trained", type=Path, default=TRAINED, help="the adapter or fully tuned model (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=MERGED, help="the merged model (default: %(default)s)")
    parser.add_argument("--gguf", type=Path, default=GGUF, help="GGUF files and Modelfile (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=EXPORT_JSON, help="sizes, seconds (default: %(default)s)")
    args = parser.parse_args()
    params, decoding = load_params(ExportParams), load_params(EvalParams)
    trained = load_training_record(args.trained)
    converter()  # missing: say so now, not after the merge

    started = time.perf_counter()
    device = pick_device()
    tokenizer = load_tokenizer(args.model)
    # Merge in fp32 and round once, at the end, to the exported dtype.
    model = load_tuned_model(args.model, args.trained, trained.lora.method, trained.quant, torch.float32, device)
    dtype = pick_dtype(params.dtype, device, "export")
    model = model.to(dtype)
    model.generation_config = GenerationConfig(
        **decoding_record(decoding),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )

    check_params_unchanged()
    with atomic_dir(args.out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # transformers writes tokenizer.json only; a SentencePiece base (TinyLlama) keeps its own model,
        # whose merge scores llama.cpp's converter needs (without them GGUF tokenizes differently).
        for sentencepiece in args.model.glob("tokenizer.model"):
            shutil.copyfile(sentencepiece, tmp / sentencepiece.name)
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    seconds = time.perf_counter() - started
    log.info(f"export: {args.out} ({dtype_name(dtype)}, {size / 2**20:.0f} MiB) in {seconds:.0f} s")
    metrics = {
        "dtype": dtype_name(dtype),
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_mb": round(size / 2**20, 1),
        "seconds": round(seconds, 1),
    }
    metrics["gguf"] = write_gguf(args.out, args.gguf, params.gguf_types, tokenizer)
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_cli(main)
