"""The model zoo: builders registered by name, each with the card of its pretrained weights."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class PretrainedCfg:
    """What a zoo entry's pretrained weights are and how to feed them (timm's pretrained_cfg,
    torchvision's weights metadata).

    Attributes:
        hub_id: Hugging Face Hub repository holding ``config.json`` and ``model.safetensors``.
        hub_revision: branch, tag or commit to download (pin a commit for reproducibility).
        published: whether weights have been uploaded to ``hub_id``. When False the repository
            id is a placeholder and ``pretrained=True`` only finds weights someone put in the
            local Hub cache.
        input_size: (C, H, W) of the training and test images.
        mean, std: per-channel normalisation of RGB images in [0, 1].
        datasets: training datasets; their order is the domain ID order.
        num_cameras: global camera IDs the camera classifiers were trained on.
        reported_metrics: {dataset: {metric: value}} for these weights; for unpublished entries
            the numbers the paper reports for this configuration (see ``metrics_source``).
        metrics_source: where ``reported_metrics`` come from.
    """

    hub_id: str
    hub_revision: str = "main"
    published: bool = False
    input_size: tuple[int, int, int] = (3, 256, 128)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    datasets: tuple[str, ...] = ()
    num_cameras: int = 0
    reported_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics_source: str = ""

    @property
    def domain_names(self) -> tuple[str, ...]:
        """Dataset name of each domain ID."""
        return self.datasets


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_PRETRAINED_CFGS: dict[str, PretrainedCfg] = {}


def register_model(pretrained_cfg: PretrainedCfg) -> Callable[[Builder], Builder]:
    """Decorator adding a builder to the zoo under its function name.

    Args:
        pretrained_cfg: the card of the entry's pretrained weights.
    """
    if not isinstance(pretrained_cfg, PretrainedCfg):
        raise TypeError(
            f"pretrained_cfg must be a PretrainedCfg, got {type(pretrained_cfg).__name__}"
        )

    def decorator(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        _BUILDERS[name] = builder
        _PRETRAINED_CFGS[name] = pretrained_cfg
        return builder

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style pattern
    such as ``"*dcsd*"``."""
    names = sorted(_BUILDERS)
    if pattern is None:
        return names
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _BUILDERS


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    return name


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The pretrained card of the registered model ``name``."""
    return _PRETRAINED_CFGS[_check_name(name)]


def create_model(name: str, pretrained: Any = False, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, e.g. ``"resnet50_dcsd"``.
        pretrained: ``False``; ``True`` (the entry's Hub weights); ``"imagenet"`` (torchvision
            ResNet50 ImageNet backbone); or a local folder / ``.safetensors`` file.
        **kwargs: the builder's keyword-only options (num_classes, num_domains, ...).
    """
    return _BUILDERS[_check_name(name)](pretrained=pretrained, **kwargs)
