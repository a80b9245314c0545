"""The model zoo: builders registered by name, each with the card of its pretrained weights."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch.nn as nn

from dcsd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
# Larger than any ReID crop; a card asking for more would make extraction run out of memory.
MAX_INPUT_SIDE = 4096


@dataclass(frozen=True)
class PretrainedCfg:
    """What a zoo entry's pretrained weights are and how to feed them (timm's pretrained_cfg,
    torchvision's weights metadata).

    A model carries its card as ``model.pretrained_cfg``: a freshly built model has its zoo
    entry's card, a loaded model the card saved in its ``config.json`` (``"pretrained_cfg"``),
    so weights fine-tuned at another size or on other data say so themselves.

    Attributes:
        hub_id: Hugging Face Hub repository holding ``config.json`` and ``model.safetensors``
            ("" for weights that are not on the Hub).
        hub_revision: branch, tag or commit to download (pin a commit for reproducibility).
        published: whether weights have been uploaded to ``hub_id``. When False the repository
            id is a placeholder and ``pretrained=True`` only finds weights someone put in the
            local Hub cache.
        input_size: (C, H, W) of the training and test images.
        mean, std: per-channel normalisation of RGB images in [0, 1].
        interpolation: resize interpolation of the eval transforms (``"bicubic"`` as BoT).
        datasets: training datasets; their order is the domain ID order.
        num_cameras: global camera IDs the camera classifiers were trained on.
        reported_metrics: {dataset: {metric: value}} for these weights; for unpublished entries
            the numbers the paper reports for this configuration (see ``metrics_source``).
        metrics_source: where ``reported_metrics`` come from.
        source: where the weights come from when not from training on ``datasets`` (e.g. the
            DDF ImageNet checkpoint a folder was converted from); "" otherwise.
    """

    hub_id: str = ""
    hub_revision: str = "main"
    published: bool = False
    input_size: tuple[int, int, int] = (3, 256, 128)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    datasets: tuple[str, ...] = ()
    num_cameras: int = 0
    reported_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics_source: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        # A card may come from a stranger's config.json: every size is bounded, every number
        # finite, before transforms are built from it.
        size = self.input_size
        if (
            len(size) != 3
            or not all(type(n) is int for n in size)
            or size[0] != 3
            or not all(1 <= n <= MAX_INPUT_SIDE for n in size[1:])
        ):
            raise ValueError(
                f"input_size must be (3, H, W) with H, W in 1..{MAX_INPUT_SIDE}, got {size!r}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (
                isinstance(values, str)
                or len(values) != 3
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            ):
                raise ValueError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0 for each channel, got {self.std!r}")
        if type(self.num_cameras) is not int or self.num_cameras < 0:
            raise ValueError(f"num_cameras must be an int >= 0, got {self.num_cameras!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if isinstance(self.datasets, str):
            raise TypeError(f"datasets must be a sequence of names, got the str {self.datasets!r}")
        # JSON gives lists back: store tuples, so cards compare equal as written.
        for name in ("input_size", "mean", "std", "datasets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def domain_names(self) -> tuple[str, ...]:
        """Dataset name of each domain ID."""
        return self.datasets

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready values (what ``config.json`` stores under ``pretrained_cfg``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "pretrained_cfg") -> PretrainedCfg:
        """A card from :meth:`to_dict`'s output. Unknown fields (a later dcsd's) are ignored
        with a warning; bad values raise ``ValueError`` naming ``source``."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source} must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:  # a card written by a later dcsd: read what this version knows
            warnings.warn(
                f"{source} has fields this dcsd does not know, ignored: {unknown}",
                UserWarning,
                stacklevel=2,
            )
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source} is not a valid pretrained config: {error}") from error

    def trained_on(
        self,
        datasets: Sequence[str],
        num_cameras: int,
        input_size: Sequence[int] | None = None,
    ) -> PretrainedCfg:
        """The card of new weights trained from this architecture: the given training data and
        image size, no Hub repository and no metrics yet (add measured ones with
        ``dataclasses.replace(cfg, reported_metrics=..., metrics_source=...)``)."""
        return dataclasses.replace(
            self,
            hub_id="",
            hub_revision="main",
            published=False,
            input_size=tuple(input_size) if input_size is not None else self.input_size,
            datasets=tuple(datasets),
            num_cameras=num_cameras,
            reported_metrics={},
            metrics_source="",
            source="",
        )


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
