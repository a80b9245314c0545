"""The non-local attention block of the AGW baseline (Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook")."""

from __future__ import annotations

import torch
import torch.nn as nn


class NonLocalBlock(nn.Module):
    """Dot-product non-local block with a zero-initialised residual output.

    y = x + BN(W(f(x) g(x))), f(x)_{ij} = theta(x_i) . phi(x_j) / (H*W), with theta, phi, g and W
    1x1 convolutions through ``inter_channels`` channels. The output BatchNorm starts at zero, so
    a freshly inserted block is the identity and an ImageNet backbone keeps its behaviour.

    Args:
        channels: C of the input feature map.
        inter_channels: width of the embedding. The default 1 is what the AGW reference code
            computes (its ``reduc_ratio // reduc_ratio``) and what AGW's reported results used;
            Wang et al.'s original block uses C // 2.

    Shapes:
        x: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, inter_channels: int = 1) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("inter_channels", inter_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.inter_channels = inter_channels
        self.theta = nn.Conv2d(channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(channels, inter_channels, kernel_size=1)
        self.g = nn.Conv2d(channels, inter_channels, kernel_size=1)
        self.out_conv = nn.Conv2d(inter_channels, channels, kernel_size=1)
        self.out_bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.out_bn.weight)
        nn.init.zeros_(self.out_bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, I)
        phi = self.phi(x).flatten(2)  # (N, I, HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, I)
        affinity = torch.bmm(theta, phi) / (height * width)
        y = (
            torch.bmm(affinity, g)
            .transpose(1, 2)
            .reshape(batch, self.inter_channels, height, width)
        )
        return x + self.out_bn(self.out_conv(y))
