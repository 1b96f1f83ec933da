"""The losses: of a training batch, the mean over validation rows, and each reference description's in evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from lorapipe.data.packing import IGNORE, PackedRow, collate, example_row
from lorapipe.data.prompt import Example


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
    rows: Sequence[PackedRow],
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


@torch.no_grad()
def reference_losses(
    model: torch.nn.Module, examples: Sequence[Example], pad_id: int, batch: int, device: torch.device
) -> list[tuple[float, int]]:
    """Per example: the mean loss of its response tokens given its prompt, and their count
    (evaluation's perplexity of the reference descriptions)."""
    model.eval()
    rows = [example_row(ex, completion_only=True) for ex in examples]
    losses = []
    for i in range(0, len(rows), batch):
        b = collate(rows[i : i + batch], pad_id)
        logits = model(input_ids=b["input_ids"].to(device), position_ids=b["position_ids"].to(device)).logits
        labels = b["labels"][:, 1:].to(device)
        token_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
        )
        counts = (labels != IGNORE).sum(dim=1)
        losses += [(float(s) / max(int(n), 1), int(n)) for s, n in zip(token_loss.sum(dim=1), counts, strict=True)]
    return losses
