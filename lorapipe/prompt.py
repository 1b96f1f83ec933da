"""The one prompt format, shared by training (tokenize) and evaluation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

INSTRUCTION = "Write the product description for this Amazon product title."
# Base models without a chat template (TinyLlama v1.1) get a plain, unambiguous layout.
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Title:\n{title}\n\n### Description:\n"
_SLOT = "\x00title\x00"  # stands in for a title while a template is rendered once


def build_prompt(tokenizer: PreTrainedTokenizerBase, title: str) -> str:
    """The prompt text for `title`: the model's chat template if it has one, else PLAIN_TEMPLATE."""
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": title}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token or ""
    return bos + PLAIN_TEMPLATE.format(instruction=INSTRUCTION, title=title)


def build_prompts(tokenizer: PreTrainedTokenizerBase, titles: Sequence[str]) -> list[str]:
    """build_prompt for each title. Rendering a chat template costs more than tokenizing, so where
    the template places the title verbatim (checked on probes) it is rendered once and split."""
    prefix, slot, suffix = build_prompt(tokenizer, _SLOT).partition(_SLOT)
    probes = ["  Odd {{title}} <b>&amp;\n ", *titles[:: max(len(titles) // 8, 1)]]
    if slot and _SLOT not in suffix and all(build_prompt(tokenizer, t) == prefix + t + suffix for t in probes):
        return [prefix + title + suffix for title in titles]
    return [build_prompt(tokenizer, title) for title in titles]


def use_tokenizer_threads() -> None:
    """Let the Rust tokenizer encode batches on every core (1.9x one thread's speed on 2 cores with
    the batched calls above). For stages that fork nothing after tokenizing: `make` and the
    tests export TOKENIZERS_PARALLELISM=false, which keeps the tokenizers' fork warning out of
    the other stages' logs."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch: int = 4096) -> list[list[int]]:
    """Token ids of each text (no special tokens added), in batches through the fast (Rust) tokenizer.

    `encode_batch_fast` skips the character offsets that `tokenizer(texts)` computes, and the
    per-call overhead of the Python wrapper: same ids, several times faster.
    """
    if not tokenizer.is_fast:
        return tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ids: list[list[int]] = []
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        ids += [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(chunk, add_special_tokens=False)]
    return ids


def truncate_titles(
    tokenizer: PreTrainedTokenizerBase, titles: Sequence[str], max_tokens: int
) -> list[tuple[str, bool]]:
    """Each title cut to at most `max_tokens` tokens, and whether it was cut."""
    return [
        (tokenizer.decode(ids[:max_tokens]).strip(), True) if len(ids) > max_tokens else (title, False)
        for title, ids in zip(titles, encode_texts(tokenizer, titles), strict=True)
    ]


def truncate_title(tokenizer: PreTrainedTokenizerBase, title: str, max_tokens: int) -> tuple[str, bool]:
    """Cut `title` to at most `max_tokens` tokens; returns the title and whether it was cut."""
    return truncate_titles(tokenizer, [title], max_tokens)[0]


@dataclass(frozen=True)
class Example:
    """One tokenized training example: prompt then response, ending in EOS."""

    input_ids: list[int]
    prompt_len: int
    prompt_truncated: bool
    response_truncated: bool


def encode_examples(
    tokenizer: PreTrainedTokenizerBase,
    titles: Sequence[str],
    contents: Sequence[str],
    prompt_tokens: int,
    response_tokens: int,
) -> list[Example]:
    """Tokenize (title, content) pairs within the prompt/response token budgets, in batches."""
    cut = truncate_titles(tokenizer, titles, prompt_tokens)
    prompt_ids = encode_texts(tokenizer, build_prompts(tokenizer, [title for title, _ in cut]))
    examples = []
    for (_, prompt_cut), prompt, response in zip(cut, prompt_ids, encode_texts(tokenizer, contents), strict=True):
        response_cut = len(response) > response_tokens
        ids = [*prompt, *response[:response_tokens], tokenizer.eos_token_id]
        examples.append(Example(ids, len(prompt), prompt_cut, response_cut))
    return examples


def encode_example(
    tokenizer: PreTrainedTokenizerBase, title: str, content: str, prompt_tokens: int, response_tokens: int
) -> Example:
    """Tokenize one (title, content) pair within the prompt/response token budgets."""
    return encode_examples(tokenizer, [title], [content], prompt_tokens, response_tokens)[0]
