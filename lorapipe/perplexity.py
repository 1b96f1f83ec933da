"""Mean per-token loss of packed rows: validation loss while training, reference perplexity in evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from lorapipe.packing import IGNORE, collate


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
            out = model(**b, use_cache=False)
        total += float(out.loss) * n
        count += n
    model.train()
    return total / max(count, 1)
