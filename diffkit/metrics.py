"""Training metrics: a JSONL row per logged step, TensorBoard scalars when available, the loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .files import atomic_path, write_text_atomic

# The scalars also sent to TensorBoard.
BOARD_KEYS = ("loss", "lr", "grad_norm", "steps_per_s")


class MetricsLog:
    """Appends rows to ``path`` (metrics.jsonl); ``board_dir`` receives TensorBoard scalars if tensorboard is installed."""

    def __init__(self, path: Path, board_dir: Optional[Path] = None) -> None:
        self.path = path
        self.board = _tensorboard(board_dir) if board_dir is not None else None

    def start(self) -> None:
        """A fresh run: an empty log."""
        write_text_atomic(self.path, "")

    def truncate_after(self, step: int) -> int:
        """A resumed run: drop the rows logged after ``step`` (the checkpoint it resumes from), which the run
        is about to log again, and a line cut by a crash. Returns how many rows were dropped."""
        if not self.path.is_file():
            self.start()
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(row, dict) and row.get("step", 0) > step:
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))
        return dropped

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:  # one short write: a crash cannot cut it in the middle
            f.write(json.dumps(row) + "\n")
        if self.board is not None:
            for key in BOARD_KEYS:
                if key in row:
                    self.board.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def plot(self, out: Path) -> None:
        plot_loss_curve(self.path, out)


def _tensorboard(path: Path):
    """A TensorBoard writer into ``path`` when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def plot_loss_curve(metrics_path: Path, out: Path) -> None:
    """The training loss against the step, log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for line in metrics_path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    rows = [r for r in rows if isinstance(r, dict) and "loss" in r]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
