"""Batched, length-sorted greedy (or sampled) generation that stops at EOS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lorapipe.core.cli import progress
from lorapipe.core.params import EvalParams
from lorapipe.model.decoding import SAMPLING_ONLY, decoding_record


def generate_kwargs(record: dict[str, Any]) -> dict[str, Any]:
    """`generate()` keyword arguments of a decoding record."""
    return record if record["do_sample"] else {**record, **dict.fromkeys(SAMPLING_ONLY)}


@dataclass(frozen=True)
class Generated:
    """One completion: its text, its tokens before EOS, and whether it ran away (reached max_new_tokens
    without emitting EOS: output_health's `runaway`, which the text alone cannot tell)."""

    text: str
    new_tokens: int
    runaway: bool


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    params: EvalParams,
    desc: str = "generate",
) -> list[Generated]:
    """Completions of `prompts` (token ids, from `lorapipe.data.prompt.encode_prompts`: a prompt's text alone
    cannot say which of its special-token spellings are the template's), in their order.

    Prompts are sorted by length so each batch pads little; padding goes on the left, where
    a decoder-only model expects it.
    """
    model.eval()
    tokenizer.padding_side = "left"
    encoded = [list(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    device = next(model.parameters()).device
    outputs: list[Generated] = [Generated("", 0, False)] * len(prompts)
    for start in progress(range(0, len(order), params.batch_size), desc=desc, unit="batch"):
        batch = order[start : start + params.batch_size]
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(device)
        generated = model.generate(
            **padded,
            **generate_kwargs(decoding_record(params)),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = generated[:, padded["input_ids"].shape[1] :]
        # A finished row is padded after its EOS; a row without EOS ran to max_new_tokens.
        is_eos = new_tokens == tokenizer.eos_token_id
        stopped = is_eos.any(dim=1).tolist()
        lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), new_tokens.shape[1]).tolist()
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i, text, length, eos in zip(batch, texts, lengths, stopped, strict=True):
            outputs[i] = Generated(text.strip(), length, not eos)
    return outputs


def generate_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    params: EvalParams,
    desc: str = "generate",
) -> list[str]:
    """The texts of `generate`."""
    return [g.text for g in generate(model, tokenizer, prompts, params, desc)]
