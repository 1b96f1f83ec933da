"""What the generate_base and evaluate stages share: the test samples they score, the prompts,
one model's decoding and reference losses, and the base outputs file that passes between them.

The base model's outputs depend only on the base model, the test split and the params in
BASE_SETTINGS, so generate_base decodes them once and stays cached while experiments change
lora/train/quant; evaluate reads them back and refuses a file made for other samples, prompts,
settings or base weights, rather than score a stale base.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from lorapipe.core.cli import UserError
from lorapipe.core.outputs import sha256_of, write_json
from lorapipe.core.params import EvalParams, TokenizeParams
from lorapipe.data.data_files import read_text_table
from lorapipe.data.prompt import build_prompts, encode_examples, encode_prompts, truncate_titles
from lorapipe.model.generation import generate
from lorapipe.model.modeling import load_tokenizer, pick_device, pick_dtype
from lorapipe.train.losses import reference_losses

# The params the base model's outputs depend on: generate_base's params in dvc.yaml, exactly.
# Not eval.report_samples (evaluate's file layout) nor tokenize.seq_len/completion_only (training).
BASE_SETTINGS = (
    "eval.max_samples",
    "eval.seed",
    "eval.batch_size",  # batched decoding pads, and padding moves the last bits of the logits
    "eval.max_new_tokens",
    "eval.do_sample",
    "eval.temperature",
    "eval.top_p",
    "eval.repetition_penalty",
    "tokenize.prompt_tokens",
    "tokenize.response_tokens",  # the reference losses cut the description there, as training does
)
RERUN = "run the generate_base stage (dvc repro generate_base)"


def base_settings(params: EvalParams, tok_params: TokenizeParams) -> dict[str, Any]:
    """BASE_SETTINGS with their values, as the base outputs file records them."""
    sections = {"eval": params, "tokenize": tok_params}
    return {key: getattr(sections[key.split(".")[0]], key.split(".")[1]) for key in BASE_SETTINGS}


def select_samples(path: Path, max_samples: int, seed: int) -> tuple[list[str], list[str]]:
    """Titles and reference descriptions of the scored test rows: `max_samples` drawn with `seed`,
    kept in the file's order (a larger max_samples only adds rows)."""
    table = read_text_table(path)
    rows = np.sort(np.random.default_rng(seed).permutation(table.num_rows)[:max_samples])
    titles = [table["title"][int(i)].as_py() for i in rows]
    references = [table["content"][int(i)].as_py() for i in rows]
    return titles, references


def eval_prompts(
    tokenizer: PreTrainedTokenizerBase, titles: Sequence[str], prompt_tokens: int
) -> tuple[list[str], list[list[int]]]:
    """The training prompt of each title, cut to `prompt_tokens` as training cut it: as text (what the
    base outputs file records) and as the token ids the models decode from."""
    cut = [title for title, _ in truncate_titles(tokenizer, titles, prompt_tokens)]
    return build_prompts(tokenizer, cut), encode_prompts(tokenizer, cut)


@dataclass(frozen=True)
class EvalInputs:
    """The scored test samples and what both stages decode them with."""

    titles: list[str]
    references: list[str]
    prompts: list[str]  # as text: what the base outputs file records
    prompt_ids: list[list[int]]  # as token ids: what the models decode from
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype

    def fields(self) -> dict[str, list[str]]:
        """The per-sample texts the base outputs file records and evaluate checks it by."""
        return {"title": self.titles, "reference": self.references, "prompt": self.prompts}


def load_eval_inputs(test: Path, model_dir: Path, params: EvalParams, tok_params: TokenizeParams) -> EvalInputs:
    """The test samples (select_samples), their prompts with the base model's tokenizer, and the device and
    dtype to decode in. Seeds torch with eval.seed before any model loads, as both stages always did:
    the sampled decoding of eval.do_sample draws from it."""
    titles, references = select_samples(test, params.max_samples, params.seed)
    torch.manual_seed(params.seed)
    device = pick_device()
    dtype = pick_dtype("auto", device, "decode")
    tokenizer = load_tokenizer(model_dir)
    prompts, prompt_ids = eval_prompts(tokenizer, titles, tok_params.prompt_tokens)
    return EvalInputs(titles, references, prompts, prompt_ids, tokenizer, device, dtype)


@dataclass(frozen=True)
class ModelOutputs:
    """One model's texts for the scored samples, whether each ran away, and each reference's loss."""

    texts: list[str]
    runaway: list[bool]  # reached eval.max_new_tokens without EOS (lorapipe.eval.output_health)
    losses: list[tuple[float, int]]  # (mean loss per reference token, reference tokens)


@dataclass(frozen=True)
class Decoded:
    """One model's outputs for the test set, and how fast it decoded them."""

    outputs: ModelOutputs
    seconds: float  # decoding alone, not the reference losses
    new_tokens: int  # the texts' tokens, up to EOS

    @property
    def tokens_per_s(self) -> float:
        return round(self.new_tokens / max(self.seconds, 1e-9), 1)


def decode_and_measure(
    model: torch.nn.Module, inputs: EvalInputs, params: EvalParams, tok_params: TokenizeParams, desc: str
) -> Decoded:
    """One model's texts for the test set's prompts, timed, and its reference losses."""
    tokenizer = inputs.tokenizer
    started = time.perf_counter()
    generated = generate(model, tokenizer, inputs.prompt_ids, params, desc=desc)
    seconds = time.perf_counter() - started
    device = next(model.parameters()).device
    examples = encode_examples(
        tokenizer, inputs.titles, inputs.references, tok_params.prompt_tokens, tok_params.response_tokens
    )
    losses = reference_losses(model, examples, tokenizer.pad_token_id, params.batch_size, device)
    outputs = ModelOutputs([g.text for g in generated], [g.runaway for g in generated], losses)
    return Decoded(outputs, seconds, sum(g.new_tokens for g in generated))


def weights_sha256(model_dir: Path) -> dict[str, str]:
    """sha256 of each safetensors file of a model folder: which base decoded the outputs."""
    return {f.name: sha256_of(f) for f in sorted(Path(model_dir).glob("*.safetensors"))}


def write_base_outputs(
    path: Path,
    settings: dict[str, Any],
    weights: dict[str, str],
    dtype: str,
    samples: dict[str, Sequence[str]],
    outputs: ModelOutputs,
) -> None:
    """The base outputs file: what it was made with (settings, weights, dtype), then per sample, in
    select_samples' order, the `samples` fields (title, reference, prompt), text, runaway, loss and tokens."""
    per_sample = zip(zip(*samples.values(), strict=True), outputs.texts, outputs.runaway, outputs.losses, strict=True)
    rows = [
        {**dict(zip(samples, values, strict=True)), "text": text, "runaway": runaway, "loss": loss, "tokens": tokens}
        for values, text, runaway, (loss, tokens) in per_sample
    ]
    write_json(path, {"settings": settings, "weights_sha256": weights, "dtype": dtype, "samples": rows})


def read_base_outputs(
    path: Path,
    settings: dict[str, Any],
    weights: dict[str, str],
    samples: dict[str, Sequence[str]],
) -> tuple[ModelOutputs, str]:
    """The base's outputs and dtype from the base outputs file, checked against what evaluate is about
    to score: the same `settings`, base `weights` and `samples` (title, reference and prompt lists).
    A missing, unreadable, mismatched or older file is one UserError naming it."""
    if not path.is_file():
        raise UserError(f"{path}: not found; run the generate_base stage first (dvc repro generate_base)")
    try:
        made = json.loads(path.read_bytes())
        rows, made_settings = made["samples"], dict(made["settings"])
        if rows and "runaway" not in rows[0]:
            raise UserError(
                f"{path}: made before the runaway flag was recorded, which output health needs and the texts "
                f"alone cannot tell (whether decoding stopped at EOS); {RERUN}"
            )
        fields = (*samples, "text", "runaway", "loss", "tokens")
        stored = {field: [row[field] for row in rows] for field in fields}
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a base outputs file ({type(err).__name__}: {err}); {RERUN}") from None
    changed = [f"{k} {made_settings.get(k)!r} (now {v!r})" for k, v in settings.items() if made_settings.get(k) != v]
    if changed:
        raise UserError(f"{path}: made with {', '.join(changed)}; {RERUN}")
    if made.get("weights_sha256") != weights:
        raise UserError(f"{path}: decoded by another base model (its safetensors differ); {RERUN}")
    for field in samples:  # title and reference: the rows; prompt: the tokenizer and prompt format
        if stored[field] != list(samples[field]):
            raise UserError(f"{path}: its samples' {field}s are not those evaluate scores now; {RERUN}")
    losses = list(zip(stored["loss"], stored["tokens"], strict=True))
    return ModelOutputs(stored["text"], [bool(r) for r in stored["runaway"]], losses), str(made.get("dtype"))
