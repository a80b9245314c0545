"""Global pooling layers of the ReID heads."""

from __future__ import annotations

import torch
import torch.nn as nn


class GeneralizedMeanPooling(nn.Module):
    """Generalised-mean (GeM) pooling with a learnable exponent, as in the AGW baseline.

    f = (mean over H, W of clamp(x, eps)^p)^(1/p): p = 1 is average pooling, p -> inf max
    pooling. AGW starts from p = 3 and learns it.

    Args:
        p: initial exponent (> 0).
        eps: lower clamp of the input, so the power stays defined for ReLU zeros.

    Shapes:
        x: (N, C, H, W) -> (N, C).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(p, (int, float)) or p <= 0:
            raise ValueError(f"p must be a positive number, got {p!r}")
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Powers of activations overflow float16/bfloat16 quickly: pool in float32.
        values = x.float().clamp(min=self.eps).pow(self.p)
        return values.mean(dim=(2, 3)).pow(1.0 / self.p).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class GlobalAveragePooling(nn.Module):
    """Global average pooling: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))
