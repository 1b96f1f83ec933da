"""The one prompt format, shared by training (tokenize) and evaluation."""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

if TYPE_CHECKING:  # transformers takes ~1 CPU-s to import: the reporting CLIs build prompts without it
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
    """Token ids of each data text (a title, a description), in batches through the fast (Rust) tokenizer.

    Text that spells a special token ("<|im_end|>", "</s>") is encoded as the text it is, never as
    that token: a scraped title must not end the user turn, nor a description hold an EOS. Text
    without such spellings gets the ids it always got. No special tokens are added.
    `encode_batch_fast` skips the character offsets that `tokenizer(texts)` computes, and the
    per-call overhead of the Python wrapper: same ids, several times faster.
    """
    return _encode(tokenizer, texts, batch, specials_as_text=True)


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch: int = 4096, *, specials_as_text: bool
) -> list[list[int]]:
    """encode_texts, or (specials_as_text=False) with special tokens' spellings read as those tokens, as a
    template's own are."""
    if not tokenizer.is_fast:
        return tokenizer(list(texts), add_special_tokens=False, split_special_tokens=specials_as_text)["input_ids"]
    backend = _text_only(tokenizer) if specials_as_text else tokenizer.backend_tokenizer
    ids: list[list[int]] = []
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        ids += [e.ids for e in backend.encode_batch_fast(chunk, add_special_tokens=False)]
    return ids


_TEXT_ONLY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _text_only(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """A copy of the Rust tokenizer that encodes special tokens' spellings as text. A copy, not the
    tokenizer's own `encode_special_tokens` switch: transformers flips that on every call it makes,
    and a switch shared by threads (the app's requests) would let one call see another's setting."""
    if tokenizer not in _TEXT_ONLY:
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.encode_special_tokens = True
        _TEXT_ONLY[tokenizer] = backend
    return _TEXT_ONLY[tokenizer]


def special_token_pattern(tokenizer: PreTrainedTokenizerBase) -> re.Pattern[str]:
    """Where a text spells one of the tokenizer's special tokens (longest first, as the tokenizer matches)."""
    spellings = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special}, key=len)
    return re.compile("|".join(re.escape(s) for s in reversed(spellings)) or r"(?!)")


@dataclass(frozen=True)
class _PromptFrame:
    """What the template puts around every title: `head` ends at its last special token before the
    title, `tail` starts at its first one after it. Between them lies the title with the template's
    plain text beside it (ChatML: "user\n" + title), which the tokenizer encodes as one piece."""

    head: str
    tail: str
    specials: re.Pattern[str]
    any_normalized: bool  # a special token matched after normalisation: the raw text cannot tell


def _common_length(one: str, other: str) -> int:
    """How many characters the two strings share at their start."""
    return next((i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b), min(len(one), len(other)))


def _prompt_frame(tokenizer: PreTrainedTokenizerBase) -> _PromptFrame:
    # Two one-letter titles render alike but for the title, whatever the template does to it (trim, upper).
    one, other = build_prompt(tokenizer, "a"), build_prompt(tokenizer, "b")
    prefix = one[: _common_length(one, other)]
    suffix = one[len(one) - _common_length(one[::-1], other[::-1]) :]
    specials = special_token_pattern(tokenizer)
    head = prefix[: max((m.end() for m in specials.finditer(prefix)), default=0)]
    tail_at = next((m.start() for m in specials.finditer(suffix)), len(suffix))
    tail = suffix[tail_at:]
    if specials.search(one[len(head) : len(one) - len(tail)]):
        raise ValueError("the chat template puts special tokens between parts of the title; cannot encode it")
    any_normalized = any(t.special and t.normalized for t in tokenizer.added_tokens_decoder.values())
    return _PromptFrame(head, tail, specials, any_normalized)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, titles: Sequence[str]) -> list[list[int]]:
    """Token ids of each title's prompt: the template's special tokens as such, the title as text.

    Most prompts are encoded whole, as the tokenizer always did. A prompt whose title spells a
    special token (or makes one with the template's text beside it) is encoded in three parts:
    the template's text before and after, and between them the title with the template's plain
    text beside it, there with special tokens' spellings as text. That middle part is what the
    tokenizer itself encodes as one piece (between two special tokens), so the split moves no
    token boundary the template had.
    """
    frame = _prompt_frame(tokenizer)
    prompts = build_prompts(tokenizer, titles)
    start, cut = len(frame.head), len(frame.tail)
    middles: dict[int, str] = {}
    for i, prompt in enumerate(prompts):
        if not (prompt.startswith(frame.head) and prompt.endswith(frame.tail) and len(prompt) >= start + cut):
            raise ValueError(f"the chat template renders other text around the title {titles[i]!r}")
        middle = prompt[start : len(prompt) - cut]
        if frame.any_normalized or frame.specials.search(middle):
            middles[i] = middle
    whole_ids = _encode(tokenizer, [p for i, p in enumerate(prompts) if i not in middles], specials_as_text=False)
    if not middles:
        return whole_ids
    head_ids, tail_ids = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (frame.head, frame.tail))
    middle_ids = dict(zip(middles, encode_texts(tokenizer, list(middles.values())), strict=True))
    whole = iter(whole_ids)
    return [[*head_ids, *middle_ids[i], *tail_ids] if i in middle_ids else next(whole) for i in range(len(prompts))]


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
    prompt_ids = encode_prompts(tokenizer, [title for title, _ in cut])
    examples = []
    for (_, prompt_cut), prompt, response in zip(cut, prompt_ids, encode_texts(tokenizer, contents), strict=True):
        response_cut = len(response) > response_tokens
        ids = [*prompt, *response[:response_tokens], tokenizer.eos_token_id]
        examples.append(Example(ids, len(prompt), prompt_cut, response_cut))
    return examples
