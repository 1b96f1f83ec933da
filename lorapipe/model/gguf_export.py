"""GGUF for llama.cpp and Ollama: llama.cpp's own converter, and an Ollama Modelfile in the project's prompt format.

    python -m lorapipe.model.gguf_export fetch                      # once: the converter into .cache/llama.cpp
    python -m lorapipe.model.gguf_export convert models/merged models/gguf --types f16 q8_0

The converter is llama.cpp's `convert_hf_to_gguf.py` (MIT), the maintained one that handles both
TinyLlama's SentencePiece and SmolLM2's BPE tokenizers (it detects the pre-tokenizer llama.cpp needs).
It is not published on PyPI by itself: `fetch` takes it, with its own matching `gguf-py`, from the
llama-cpp-python source distribution on PyPI (`pip download`, nothing compiled). It runs in a
child process with its bundled `gguf-py` first on the path, so it never mixes with the `gguf`
package that transformers' GGUF loader uses.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.outputs import atomic_dir
from lorapipe.core.params import FILE_OF, GGUF_TYPES, ExportParams, load_params
from lorapipe.data.prompt import build_prompt
from lorapipe.model.decoding import llama_cpp_settings

if TYPE_CHECKING:  # `convert` and `fetch` only run commands: transformers takes seconds to import
    from transformers import PreTrainedTokenizerBase

SOURCE_PACKAGE = "llama-cpp-python==0.3.36"  # its sdist vendors llama.cpp; nothing of it is built
CONVERTER_DIR = Path(os.environ.get("LORAPIPE_LLAMA_CPP", Path(__file__).resolve().parents[2] / ".cache/llama.cpp"))
# What `fetch` keeps of the sdist's vendor/llama.cpp: the converter, its gguf-py, the licence, and
# LLaMA's SentencePiece vocabulary (TinyLlama's tokenizer; the tests convert a model with it).
KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE", "models/ggml-vocab-llama-spm.gguf")
FETCH_HINT = "run `make gguf-converter` (python -m lorapipe.model.gguf_export fetch)"
# A stand-in for the title inside a rendered prompt; no tokenizer template alters it.
TITLE_SLOT = "\x00TITLE\x00"


def converter() -> Path:
    script = CONVERTER_DIR / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise UserError(f"{script}: llama.cpp's GGUF converter is missing; {FETCH_HINT}")
    return script


def gguf_name(outtype: str) -> str:
    """`model-Q8_0.gguf`: the quant tag in the name is how Ollama's `hf.co/<repo>:Q8_0` picks a file."""
    return f"model-{outtype.upper()}.gguf"


def convert(model_dir: Path, out: Path, outtype: str) -> None:
    """Write `model_dir` (a transformers folder: safetensors + tokenizer) as one GGUF file of `outtype`."""
    if outtype not in GGUF_TYPES:  # k-quants need llama.cpp's compiled llama-quantize
        raise UserError(f"GGUF type '{outtype}': the converter writes {', '.join(GGUF_TYPES)}")
    command = [sys.executable, str(converter()), str(model_dir), "--outtype", outtype, "--outfile", str(out)]
    # The converter puts its own gguf-py first on sys.path unless NO_LOCAL_GGUF is set.
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0 or not out.is_file():
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")] or lines[-1:] or ["no output"]
        reason = errors[-1].split(":", 2)[-1].strip() if errors[-1].startswith("ERROR:") else errors[-1]
        raise UserError(f"{model_dir}: GGUF conversion to {outtype} failed: {reason[:300]}")


def saved_decoding(model_dir: Path) -> dict[str, Any]:
    """The decoding record saved with a model (its generation_config.json); None where it sets nothing."""
    from transformers import GenerationConfig
    from transformers.utils import GENERATION_CONFIG_NAME

    if not (model_dir / GENERATION_CONFIG_NAME).is_file():
        return GenerationConfig().to_dict()
    return GenerationConfig.from_pretrained(model_dir).to_dict()


def modelfile(gguf_file: str, tokenizer: PreTrainedTokenizerBase, decoding: Mapping[str, Any]) -> str:
    """An Ollama Modelfile whose TEMPLATE renders exactly the prompt training and evaluate used, and whose
    PARAMETERs are the decoding record's.

    The prompt of a stand-in title is split around it: Ollama puts the user's title there. The BOS
    token is left out where the tokenizer adds one itself (TinyLlama): llama.cpp adds it then too.
    """
    prompt = build_prompt(tokenizer, TITLE_SLOT)
    plain, special = (tokenizer("x", add_special_tokens=add)["input_ids"] for add in (False, True))
    adds_bos = special[:1] == [tokenizer.bos_token_id] and len(special) > len(plain)
    if adds_bos and prompt.startswith(tokenizer.bos_token):
        prompt = prompt[len(tokenizer.bos_token) :]
    template = prompt.replace(TITLE_SLOT, "{{ .Prompt }}")
    lines = [
        "# Ollama: ollama create product-descriptions -f Modelfile && ollama run product-descriptions 'Oak Desk'",
        f"FROM ./{gguf_file}",
        f'TEMPLATE """{template}"""',
        f'PARAMETER stop "{tokenizer.eos_token}"',
        *(f"PARAMETER {name} {value}" for name, _, value in llama_cpp_settings(decoding)),
    ]
    return "\n".join(lines) + "\n"


def write_gguf(model_dir: Path, out: Path, outtypes: tuple[str, ...], tokenizer: PreTrainedTokenizerBase) -> dict:
    """`out/` with one GGUF per type and a Modelfile on the most compact one, decoding as the model's own
    generation config says; returns size and time per type."""
    report = {}
    with atomic_dir(out) as tmp:
        for outtype in outtypes:
            started = time.perf_counter()
            convert(model_dir, tmp / gguf_name(outtype), outtype)
            size = (tmp / gguf_name(outtype)).stat().st_size
            report[outtype] = {"size_mb": round(size / 2**20, 1), "seconds": round(time.perf_counter() - started, 1)}
            log.info(f"gguf: {out / gguf_name(outtype)} ({size / 2**20:.0f} MiB)")
        smallest = min(outtypes, key=lambda t: report[t]["size_mb"])
        (tmp / "Modelfile").write_text(modelfile(gguf_name(smallest), tokenizer, saved_decoding(model_dir)))
    return report


def fetch_converter(dest: Path = CONVERTER_DIR) -> None:
    """Download the llama-cpp-python sdist with pip and keep the converter files of its vendored llama.cpp."""
    with tempfile.TemporaryDirectory() as downloads:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        result = subprocess.run([*command, SOURCE_PACKAGE, "-d", downloads], capture_output=True, text=True)
        sdists = list(Path(downloads).glob("*.tar.gz"))
        if result.returncode != 0 or not sdists:
            reason = (result.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise UserError(f"pip download {SOURCE_PACKAGE} failed: {reason}")
        unpack(sdists[0], dest)


def unpack(sdist: Path, dest: Path) -> None:
    root = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tarfile.open(sdist) as archive, atomic_dir(dest) as tmp:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.startswith(root)]
        kept = [m for m in members if m.name[len(root) :].startswith(KEEP)]
        for member in kept:
            member.name = member.name[len(root) :]
            archive.extract(member, tmp, filter="data")
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            raise UserError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
    log.info(f"gguf: llama.cpp's converter ({len(kept)} files) from {sdist.name} -> {dest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help=f"put the converter into {CONVERTER_DIR} (pip download {SOURCE_PACKAGE})")
    convert_command = commands.add_parser("convert", help="convert a transformers model folder into GGUF files")
    convert_command.add_argument("model", type=Path)
    convert_command.add_argument("out", type=Path)
    convert_command.add_argument(
        "--types", nargs="+", choices=GGUF_TYPES, help=f"default: {FILE_OF['export']}'s export.gguf_types"
    )
    args = parser.parse_args()
    if args.command == "fetch":
        fetch_converter()
        return
    if not (args.model / "config.json").is_file():
        raise UserError(f"{args.model}: no config.json; expected a transformers model folder (models/merged)")
    from lorapipe.model.modeling import load_tokenizer

    types = tuple(args.types or load_params(ExportParams).gguf_types)
    write_gguf(args.model, args.out, types, load_tokenizer(args.model))


if __name__ == "__main__":
    run_cli(main)
