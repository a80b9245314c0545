"""BoT's train and test transforms (Luo et al., 2019), with torchvision's v2 transforms.

Defaults follow fast-reid's BoT: bicubic resize to 256x128, horizontal flip p=0.5, zero padding
of 10 and a random 256x128 crop, ImageNet mean/std, random erasing p=0.5 with torchvision's
default area (2-33%) and aspect (0.3-3.3). Erasing runs after normalisation and fills with 0,
which is the ImageNet mean colour there, as fast-reid fills with the mean before normalising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Interpolation names as stored in a model's pretrained config (timm's names).
INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def build_train_transforms(
    size: Sequence[int] = (256, 128),
    flip_p: float = 0.5,
    pad: int = 10,
    erasing_p: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: InterpolationMode = InterpolationMode.BICUBIC,
) -> v2.Compose:
    """PIL image -> (3, H, W) float tensor: resize, flip, pad + random crop, normalise, erase.

    Args:
        size: output (H, W).
        flip_p: probability of a horizontal flip.
        pad: zero padding on each side before the random (H, W) crop; 0 skips pad and crop.
        erasing_p: probability of random erasing.
        mean: per-channel mean for normalisation, in [0, 1] units.
        std: per-channel standard deviation for normalisation.
        interpolation: resize interpolation.
    """
    size = _check_size(size)
    _check_probability("flip_p", flip_p)
    _check_probability("erasing_p", erasing_p)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    steps: list[v2.Transform] = [
        v2.Resize(size, interpolation=interpolation, antialias=True),
        v2.RandomHorizontalFlip(flip_p),
    ]
    if pad:
        steps += [v2.Pad(pad), v2.RandomCrop(size)]
    steps += [
        *_to_normalised_tensor(mean, std),
        v2.RandomErasing(p=erasing_p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


def build_test_transforms(
    size: Sequence[int] = (256, 128),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: InterpolationMode = InterpolationMode.BICUBIC,
) -> v2.Compose:
    """PIL image -> (3, H, W) float tensor: resize and normalise (no flip, as in the paper)."""
    size = _check_size(size)
    return v2.Compose(
        [
            v2.Resize(size, interpolation=interpolation, antialias=True),
            *_to_normalised_tensor(mean, std),
            v2.ToPureTensor(),
        ]
    )


def build_eval_transforms(pretrained_cfg: Any, size: Sequence[int] | None = None) -> v2.Compose:
    """The test transforms a model's weights expect, from its pretrained config.

    Args:
        pretrained_cfg: ``model.pretrained_cfg`` (a :class:`dcsd.models.PretrainedCfg`), or any
            object or mapping with ``input_size`` (C, H, W), ``mean``, ``std`` and optionally
            ``interpolation`` (``"bicubic"``, ``"bilinear"``, ``"nearest"``).
        size: (H, W) in place of the config's input size (e.g. a command-line override); the
            config's normalisation and interpolation still apply.

    Returns:
        :func:`build_test_transforms` at that size, normalisation and interpolation.
    """

    def field(name: str, default: Any = None) -> Any:
        if isinstance(pretrained_cfg, Mapping):
            return pretrained_cfg.get(name, default)
        return getattr(pretrained_cfg, name, default)

    input_size, mean, std = field("input_size"), field("mean"), field("std")
    if input_size is None or mean is None or std is None:
        raise ValueError(
            "pretrained_cfg must give input_size, mean and std (pass model.pretrained_cfg), got "
            f"{pretrained_cfg!r}"
        )
    if len(input_size) != 3:
        raise ValueError(f"pretrained_cfg input_size must be (C, H, W), got {input_size!r}")
    interpolation = field("interpolation", "bicubic")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"pretrained_cfg interpolation must be one of {sorted(INTERPOLATIONS)}, got "
            f"{interpolation!r}"
        )
    size = input_size[1:] if size is None else size
    return build_test_transforms(size, mean, std, INTERPOLATIONS[interpolation])


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values each, std > 0; got mean={mean}, std={std}")
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) with both >= 1, got {size}")
    return int(size[0]), int(size[1])


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
