"""``labels``: class-label embeddings with a learned null label for classifier-free guidance."""

from __future__ import annotations

import torch
import torch.nn as nn

from diffkit import hookimpl


class LabelEmbedding(nn.Module):
    """Embeds integer labels ``0 … num_classes-1``; row ``num_classes`` is the learned null label.

    In training mode each label is replaced by the null label with probability ``dropout``
    (Ho & Salimans 2022), which teaches the backbone the unconditional prediction too.
    """

    def __init__(self, num_classes: int, dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"labels: 'num_classes' must be >= 1, got {num_classes}")
        if dim < 1:
            raise ValueError(f"labels: 'dim' must be >= 1, got {dim}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"labels: 'dropout' must lie in [0, 1], got {dropout}")
        self.num_classes = num_classes
        self.dim = dim
        self.dropout = dropout
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y, device=self.embedding.weight.device)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"labels: class indices must be integers, got a {y.dtype} tensor")
        y = y.long()
        if y.ndim != 1:
            raise ValueError(f"labels: expected a 1-D batch of class indices, got shape {tuple(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels: class indices must lie in 0…{self.num_classes - 1}, got {y.min().item()}…{y.max().item()}")
        if self.training and self.dropout > 0:
            drop = torch.rand(y.shape, device=y.device) < self.dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding(y)

    def null(self, batch_size: int) -> torch.Tensor:
        idx = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=self.embedding.weight.device)
        return self.embedding(idx)


@hookimpl
def diffkit_register_conditioners(register) -> None:
    register("labels", LabelEmbedding, "class labels 0…num_classes-1 with a null label for guidance")
