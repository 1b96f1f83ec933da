"""What evaluating a model takes, apart from its scores: the test samples scored, their prompts,
and one model's decoding and reference losses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from lorapipe.generation import generate_texts
from lorapipe.packing import IGNORE, collate, example_labels
from lorapipe.params import EvalParams, TokenizeParams
from lorapipe.prompt import build_prompt, encode_example, truncate_title
from lorapipe.tables import read_text_table


def select_samples(path: Path, max_samples: int, seed: int) -> tuple[list[str], list[str]]:
    """Titles and reference descriptions of the scored test rows: `max_samples` drawn with `seed`,
    kept in the file's order (a larger max_samples only adds rows)."""
    table = read_text_table(path)
    rows = np.sort(np.random.default_rng(seed).permutation(table.num_rows)[:max_samples])
    titles = [table["title"][int(i)].as_py() for i in rows]
    references = [table["content"][int(i)].as_py() for i in rows]
    return titles, references


def eval_prompts(tokenizer: PreTrainedTokenizerBase, titles: Sequence[str], prompt_tokens: int) -> list[str]:
    """The training prompt of each title, cut to `prompt_tokens` as training cut it."""
    return [build_prompt(tokenizer, truncate_title(tokenizer, t, prompt_tokens)[0]) for t in titles]


@torch.no_grad()
def reference_losses(model, tokenizer, titles, contents, tok_params, batch, device) -> list[tuple[float, int]]:
    """Per sample: the mean loss of the reference description's tokens given its prompt, and their count."""
    model.eval()
    rows = []
    for title, content in zip(titles, contents, strict=True):
        ex = encode_example(tokenizer, title, content, tok_params.prompt_tokens, tok_params.response_tokens)
        labels = example_labels(ex, completion_only=True)
        rows.append({"input_ids": ex.input_ids, "labels": labels, "position_ids": range(len(ex.input_ids))})
    losses = []
    for i in range(0, len(rows), batch):
        b = collate(rows[i : i + batch], tokenizer.pad_token_id)
        logits = model(input_ids=b["input_ids"].to(device), position_ids=b["position_ids"].to(device)).logits
        labels = b["labels"][:, 1:].to(device)
        token_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
        )
        counts = (labels != IGNORE).sum(dim=1)
        losses += [(float(s) / max(int(n), 1), int(n)) for s, n in zip(token_loss.sum(dim=1), counts, strict=True)]
    return losses


def decode_and_measure(
    model, tokenizer, prompts, titles, references, params: EvalParams, tok_params: TokenizeParams, desc: str
) -> tuple[list[str], list[tuple[float, int]], float]:
    """One model's texts for `prompts`, its reference losses, and the seconds decoding took."""
    started = time.perf_counter()
    texts = generate_texts(model, tokenizer, prompts, params, desc=desc)
    seconds = time.perf_counter() - started
    device = next(model.parameters()).device
    losses = reference_losses(model, tokenizer, titles, references, tok_params, params.batch_size, device)
    return texts, losses, seconds
