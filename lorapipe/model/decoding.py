"""The decoding settings as one record: what evaluate and the app decode with, what export saves as the
merged model's generation config, and the same settings in llama.cpp's and Ollama's words. No torch: the
model card renders it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lorapipe.core.params import EvalParams


def decoding_record(params: EvalParams) -> dict[str, Any]:
    """The one decoding record: the `eval` params as `generate()`/GenerationConfig settings, only those
    that apply (greedy decoding has no temperature). Evaluate and the app decode with it, export saves it
    as the merged model's generation_config.json, the model card and the Ollama Modelfile render it."""
    record: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": params.do_sample}
    if params.do_sample:
        record |= {"temperature": params.temperature, "top_p": params.top_p}
    return record | {"repetition_penalty": params.repetition_penalty}


# Settings of sampling only: greedy decoding sets them to None, clearing what a model's own generation
# config may carry (else transformers warns that they are ignored).
SAMPLING_ONLY = ("temperature", "top_p", "top_k")


# The decoding record's transformers names as Ollama's Modelfile PARAMETERs and llama.cpp's command-line flags.
LLAMA_CPP_NAMES = {
    "max_new_tokens": ("num_predict", "-n"),
    # Ollama's default repeat_penalty is 1.1: it is always set, so both decode alike.
    "repetition_penalty": ("repeat_penalty", "--repeat-penalty"),
    "temperature": ("temperature", "--temp"),
    "top_p": ("top_p", "--top-p"),
    "top_k": ("top_k", "--top-k"),
}


def llama_cpp_settings(decoding: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(Ollama name, llama.cpp flag, value) of each setting a decoding record (or a generation config's dict)
    sets; greedy decoding is temperature 0 and no other sampling setting."""
    greedy = not decoding.get("do_sample")
    settings = []
    for name, (ollama, flag) in LLAMA_CPP_NAMES.items():
        value = decoding.get(name)
        if greedy and name in SAMPLING_ONLY:
            value = 0 if name == "temperature" else None  # llama.cpp decodes greedily at temperature 0
        if value is not None:
            settings.append((ollama, flag, f"{value:g}" if isinstance(value, float) else str(value)))
    return settings
