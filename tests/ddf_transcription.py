"""A transcription of DDF's ``ddf_mul_resnet50`` (theFoxofSky/ddfnet: ``ddf/ddf.py``'s
FilterNorm, build_spatial_branch, build_channel_branch, DDFPack; ``ddf_resnet.py``'s
DDFMulBottleneck on timm's ResNet), written from DDF's published code with the same module
names, so its ``state_dict()`` has DDF's keys. The CUDA op is replaced by its definition (the
``mul`` kernel's loop: out[n, c, h, w] = sum over taps of x * channel filter * spatial filter,
taps centred at (h * stride, w * stride)), written with ``F.unfold``: nothing of dcsd is used.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import calculate_gain


def ddf_mul(x, channel_filter, spatial_filter, kernel_size, dilation, stride):
    b, c, h, w = x.shape
    pad = (kernel_size - 1) // 2 * dilation
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=pad, stride=stride)
    cols = cols.reshape(b, c, kernel_size * kernel_size, h // stride, w // stride)
    taps = kernel_size * kernel_size
    channel = channel_filter.reshape(b, c, taps, 1, 1)
    spatial = spatial_filter.reshape(b, 1, taps, h // stride, w // stride)
    return (cols * channel * spatial).sum(dim=2)


class FilterNorm(nn.Module):
    def __init__(
        self, in_channels, kernel_size, filter_type, nonlinearity="linear", running_std=False
    ):
        super().__init__()
        self.in_channels = in_channels
        self.filter_type = filter_type
        self.runing_std = running_std
        std = calculate_gain(nonlinearity) / kernel_size
        if running_std:
            self.std = nn.Parameter(torch.randn(in_channels * kernel_size**2) * std)
        else:
            self.std = std

    def forward(self, x):
        if self.filter_type == "spatial":
            b, _, h, w = x.size()
            x = x.reshape(b, self.in_channels, -1, h, w)
            x = x - x.mean(dim=2).reshape(b, self.in_channels, 1, h, w)
            x = x / (x.std(dim=2).reshape(b, self.in_channels, 1, h, w) + 1e-10)
            x = x.reshape(b, _, h, w)
            return x * self.std[None, :, None, None] if self.runing_std else x * self.std
        b = x.size(0)
        c = self.in_channels
        x = x.reshape(b, c, -1)
        x = x - x.mean(dim=2).reshape(b, c, 1)
        x = x / (x.std(dim=2).reshape(b, c, 1) + 1e-10)
        x = x.reshape(b, -1)
        return x * self.std[None, :] if self.runing_std else x * self.std


class DDFPack(nn.Module):
    def __init__(self, in_channels, kernel_size=3, stride=1, dilation=1, se_ratio=0.2):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.spatial_branch = nn.Sequential(
            nn.Conv2d(in_channels, kernel_size**2, 1, stride=stride),
            FilterNorm(1, kernel_size, "spatial", "relu"),
        )
        mid = int(in_channels * se_ratio)
        self.channel_branch = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(in_channels, mid, 1),
            nn.ReLU(True),
            nn.Conv2d(mid, in_channels * kernel_size**2, 1),
            FilterNorm(in_channels, kernel_size, "channel", "relu", running_std=True),
        )

    def forward(self, x):
        b, c, h, w = x.shape
        k, s = self.kernel_size, self.stride
        channel_filter = self.channel_branch(x).reshape(b, c, k, k)
        spatial_filter = self.spatial_branch(x).reshape(b, -1, h // s, w // s)
        return ddf_mul(x, channel_filter, spatial_filter, k, self.dilation, s)


class DDFMulBottleneck(nn.Module):
    """timm's Bottleneck (stride on the 3x3) with conv2 = DDFPack."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = DDFPack(planes, 3, stride, 1, se_ratio=0.2)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


class DDFMulResNet50(nn.Module):
    """timm's ResNet(block=DDFMulBottleneck, layers=[3, 4, 6, 3]): keys conv1, bn1, layer1-4,
    fc."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks) in enumerate(
            zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)
        ):
            stride = 1 if index == 0 else 2
            layers = []
            for block in range(blocks):
                block_stride = stride if block == 0 else 1
                downsample = None
                if block == 0 and (block_stride != 1 or inplanes != planes * 4):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * 4, 1, stride=block_stride, bias=False),
                        nn.BatchNorm2d(planes * 4),
                    )
                layers.append(DDFMulBottleneck(inplanes, planes, block_stride, downsample))
                inplanes = planes * 4
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def forward_features(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
