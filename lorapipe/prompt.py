"""The one prompt format, shared by training (tokenize) and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

INSTRUCTION = "Write the product description for this Amazon product title."
# Base models without a chat template (TinyLlama v1.1) get a plain, unambiguous layout.
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Title:\n{title}\n\n### Description:\n"


def build_prompt(tokenizer: PreTrainedTokenizerBase, title: str) -> str:
    """The prompt text for `title`: the model's chat template if it has one, else PLAIN_TEMPLATE."""
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": title}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token or ""
    return bos + PLAIN_TEMPLATE.format(instruction=INSTRUCTION, title=title)


def truncate_title(tokenizer: PreTrainedTokenizerBase, title: str, max_tokens: int) -> tuple[str, bool]:
    """Cut `title` to at most `max_tokens` tokens; returns the title and whether it was cut."""
    ids = tokenizer(title, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return title, False
    return tokenizer.decode(ids[:max_tokens]).strip(), True


@dataclass(frozen=True)
class Example:
    """One tokenized training example: prompt then response, ending in EOS."""

    input_ids: list[int]
    prompt_len: int
    prompt_truncated: bool
    response_truncated: bool


def encode_example(
    tokenizer: PreTrainedTokenizerBase, title: str, content: str, prompt_tokens: int, response_tokens: int
) -> Example:
    """Tokenize one (title, content) pair within the prompt/response token budgets."""
    title, prompt_cut = truncate_title(tokenizer, title, prompt_tokens)
    prompt_ids = tokenizer(build_prompt(tokenizer, title), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    response_cut = len(response_ids) > response_tokens
    response_ids = [*response_ids[:response_tokens], tokenizer.eos_token_id]
    return Example(prompt_ids + response_ids, len(prompt_ids), prompt_cut, response_cut)
