"""Mean per-token loss of packed rows: validation loss while training, reference perplexity in evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from lorapipe.packing import IGNORE, collate


def completion_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], num_items: int) -> torch.Tensor:
    """Summed next-token loss of the labelled tokens, divided by `num_items` (transformers' causal LM loss).

    Logits are computed only at the positions followed by a label: the prompts (completion-only
    training) and the padding never reach the vocabulary projection, which saves its compute
    and, above all, its fp32 logits, the largest activation of a small model.
    """
    targets = batch["labels"][:, 1:]
    keep = torch.nn.functional.pad(targets != IGNORE, (0, 1), value=False)  # position p predicts token p + 1
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False, logits_to_keep=keep)
    loss = torch.nn.functional.cross_entropy(out.logits.float(), targets[targets != IGNORE], reduction="sum")
    return loss / num_items


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    rows: Sequence[dict],
    batch: int,
    pad_id: int,
    device: torch.device,
    amp: Callable[[], AbstractContextManager],
) -> float:
    """Mean per-token loss over `rows` (labels != IGNORE)."""
    model.eval()
    total = count = 0.0
    for i in range(0, len(rows), batch):
        b = {k: v.to(device) for k, v in collate(rows[i : i + batch], pad_id).items()}
        n = int((b["labels"][:, 1:] != IGNORE).sum())
        with amp():
            total += float(completion_loss(model, b, 1))
        count += n
    model.train()
    return total / max(count, 1)
