"""Loss curves: CSVs that `dvc plots` renders, and a PNG for the PR report and MLflow."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lorapipe.core.outputs import atomic_path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def write_loss_plots(history: list[dict], val_history: list[dict], train_log: Path, val_log: Path, curve: Path) -> None:
    """The per-step rows as CSV (`train_log`, `val_log`) and both losses drawn as a PNG (`curve`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_csv(train_log, history)
    write_csv(val_log, val_history)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="train loss", lw=1)
    if val_history:
        ax.plot([r["step"] for r in val_history], [r["val_loss"] for r in val_history], "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(curve) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
