"""DDF's ImageNet-trained ``ddf_mul_resnet50`` as the start of ResNet50-DCSD.

DDF ("Decoupled Dynamic Filter Networks", Zhou et al., CVPR 2021; theFoxofSky/ddfnet) is
timm's ResNet50 with each bottleneck's ``conv2`` replaced by ``DDFPack(width, 3, stride,
se_ratio=0.2, kernel_combine="mul")``: the same decoupled filters as DCSD's sample factor. Its
authors publish ImageNet weights (``ddf_mul_resnet50.pth.tar``, 79.1% top-1), a timm training
checkpoint. Their keys map onto ``resnet50_dcsd`` by renames and reshapes (P =
``layer{s}.{b}.conv2.``, m = int(0.2 C)):

======================================  ==================  =================================
DDF key                                 shape               dcsd key
======================================  ==================  =================================
P``spatial_branch.0.weight`` / bias     (9, C, 1, 1) / (9)  P``spatial_branch.weight`` / bias
P``channel_branch.1.weight`` / bias     (m, C, 1, 1) / (m)  P``channel_branch.0.weight`` / bias
P``channel_branch.3.weight`` / bias     (9C, m, 1, 1)       P``channel_branch.2.weight`` / bias
P``channel_branch.4.std``               (9C)                P``channel_norm.scale`` (C, 9, 1)
(DDF's spatial scale, a float)          sqrt(2) / 3         P``spatial_norm.scale``
stem, 1x1 convs, BatchNorms, downsample                     the same names
``fc.*``                                                    not used
======================================  ==================  =================================

The domain and camera MLPs start with their last layer at zero, so D = Cam = 0 and, right
after loading, ResNet50-DCSD computes DDF's function whatever its factors.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from dcsd.modules import DCSDConv

from .pretrained import LoadReport, load_model, load_tensors_by_name

logger = logging.getLogger(__name__)

# DDF's spatial FilterNorm std: calculate_gain("relu") / kernel_size, a fixed float.
DDF_SPATIAL_SCALE = math.sqrt(2.0) / 3
_CONV2 = re.compile(r"^(layer[1-4]\.\d+\.conv2\.)(.+)$")
# What a timm-era training checkpoint holds beyond tensors and plain containers.
_CHECKPOINT_GLOBALS = (argparse.Namespace,)
_CHECKPOINT_KEYS = ("state_dict", "model")
# resnet50_dcsd tensors that DDF has no counterpart of (its spatial scale is a fixed float).
_NOT_DDF = re.compile(
    r"\.(domain_mlp|camera_mlp|domain_classifier|camera_classifier|spatial_norm)\."
)


def read_ddf_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in DDF's published checkpoint (or any of its copies).

    Accepts a bare state dict, a timm training checkpoint ``{"state_dict": ..., "args":
    Namespace, ...}`` and ``module.`` prefixes (distributed training). The file is read with
    ``torch.load(weights_only=True)``, allow-listing only ``argparse.Namespace`` (what timm
    saves as ``args``): nothing else is unpickled.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a torch checkpoint, holds objects beyond tensors and
            timm's training metadata, or holds no state dict. Every message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DDF checkpoint {path} does not exist (or is not a file)")
    try:
        with torch.serialization.safe_globals(list(_CHECKPOINT_GLOBALS)):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects beyond tensors and timm's training metadata, so it was not "
            f"unpickled (weights_only=True; only argparse.Namespace is allowed): {error}"
        ) from error
    except (RuntimeError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable torch checkpoint: {error}") from error
    state = payload
    if isinstance(payload, dict):
        state = next(
            (payload[key] for key in _CHECKPOINT_KEYS if isinstance(payload.get(key), dict)),
            payload,
        )
    bare_without_tensors = (
        state is payload
        and isinstance(payload, dict)
        and not all(isinstance(value, torch.Tensor) for value in payload.values())
    )
    if not isinstance(state, dict) or not state or bare_without_tensors:
        found = sorted(map(str, payload))[:8] if isinstance(payload, dict) else ""
        raise ValueError(
            f"{path} holds no state dict (expected tensors by name, or a checkpoint with "
            f"'state_dict'), got {type(payload).__name__} {found}".rstrip()
        )
    tensors = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        tensors[key.removeprefix("module.")] = value
    return tensors


def _same(value: torch.Tensor) -> torch.Tensor:
    return value


def _squeeze_1x1(value: torch.Tensor) -> torch.Tensor:
    return value.flatten(1)


def _per_channel_taps(value: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, 9, 1)


# DDF's name inside a bottleneck's conv2 -> (dcsd's name, reshape).
_RENAMES = {
    "spatial_branch.0.weight": ("spatial_branch.weight", _same),
    "spatial_branch.0.bias": ("spatial_branch.bias", _same),
    "channel_branch.1.weight": ("channel_branch.0.weight", _squeeze_1x1),
    "channel_branch.1.bias": ("channel_branch.0.bias", _same),
    "channel_branch.3.weight": ("channel_branch.2.weight", _squeeze_1x1),
    "channel_branch.3.bias": ("channel_branch.2.bias", _same),
    "channel_branch.4.std": ("channel_norm.scale", _per_channel_taps),
}


def _dcsd_key(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    match = _CONV2.match(key)
    if match is None:
        return key, value
    prefix, rest = match.groups()
    if rest not in _RENAMES:
        return key, value
    name, reshape = _RENAMES[rest]
    return prefix + name, reshape(value)


def ddf_to_dcsd(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape a ``ddf_mul_resnet50`` state dict into ``resnet50_dcsd``'s keys (the
    table in this module's docstring); ``module.`` prefixes are removed, ``fc.*`` is dropped,
    everything else keeps its name."""
    converted = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not key.startswith("fc."):
            name, tensor = _dcsd_key(key, value)
            converted[name] = tensor
    return converted


def _is_ddf_tensor(key: str) -> bool:
    """Whether a ``resnet50_dcsd`` key is one that DDF's weights fill."""
    return key.startswith(("conv1.", "bn1.", "layer")) and not _NOT_DDF.search(key)


def read_ddf_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """DDF's weights from its checkpoint file (:func:`read_ddf_checkpoint`) or from a model
    folder that ``examples/convert_ddf.py`` wrote (its DDF tensors, in dcsd's names, read
    through :func:`dcsd.models.load_weights`' checks), ready for :func:`load_ddf_backbone`."""
    path = Path(path)
    if not path.is_dir():
        return read_ddf_checkpoint(path)
    model = load_model(path)
    return {key: value for key, value in model.state_dict().items() if _is_ddf_tensor(key)}


def _check_reproduces_ddf(model: nn.Module) -> list[DCSDConv]:
    layers = [module for module in model.modules() if isinstance(module, DCSDConv)]
    if not getattr(model, "dynamic", False) or len(layers) != 16:
        raise ValueError(
            "DDF's weights fit ResNet50-DCSD only: build the model with "
            "dcsd.create_model('resnet50_dcsd', ...)"
        )
    layer = layers[0]
    if layer.filter_norm != "ddf":
        raise ValueError(
            f"DDF's weights only mean something under DDF's FilterNorm: the model has "
            f"filter_norm={layer.filter_norm!r}; build it with filter_norm='ddf'"
        )
    if layer.kernel_size != 3 or layer.dilation != 1:
        raise ValueError(
            f"DDF's layers are 3x3 with dilation 1, the model's {layer.kernel_size}x"
            f"{layer.kernel_size} with dilation {layer.dilation}"
        )
    return layers


def load_ddf_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    """Start ResNet50-DCSD from DDF's ``ddf_mul_resnet50`` weights.

    The stem, 1x1 convolutions, BatchNorms, downsample branches and every DCSD layer's spatial
    and channel branches load (:func:`ddf_to_dcsd`); the spatial FilterNorm scale is set to
    DDF's fixed sqrt(2)/3; the last layer of every domain and camera MLP is zeroed, so that
    the model computes DDF's backbone function whatever its factors. The domain and camera
    classifiers, non-local blocks (AGW) and the head keep their fresh initialisation.

    Args:
        model: a ``resnet50_dcsd`` model with ``filter_norm="ddf"`` (any factors, head,
            last stride, number of classes, domains or cameras).
        state_dict: DDF's state dict, e.g. ``read_ddf_checkpoint("ddf_mul_resnet50.pth.tar")``
            (``module.`` prefixes are accepted).

    Returns:
        A :class:`~dcsd.models.LoadReport` in the model's key names (also logged at INFO).

    Raises:
        ValueError: the model's layer options cannot reproduce DDF (the message says which
            option to set), or ``state_dict`` lacks backbone tensors or has other shapes.
    """
    layers = _check_reproduces_ddf(model)
    state = ddf_to_dcsd(state_dict)
    own = model.state_dict()
    layer_names = {id(module): name for name, module in model.named_modules()}
    fixed = {f"{layer_names[id(layer)]}.spatial_norm.scale" for layer in layers}
    expected = [key for key in own if _is_ddf_tensor(key)]
    unexpected = sorted(state.keys() - set(expected))
    if unexpected:
        raise ValueError(
            f"state_dict has {len(unexpected)} tensors that ddf_mul_resnet50 does not have, in "
            f"dcsd's names ({', '.join(unexpected[:8])}{', ...' if len(unexpected) > 8 else ''})"
            ": is it another DDF variant (e.g. running_mean FilterNorm) or another model?"
        )
    # Names are dcsd's here; a channel-branch shape mismatch means another se_ratio than 0.2.
    loaded = load_tensors_by_name(model, state, expected, "ddf_mul_resnet50", "DDF")
    with torch.no_grad():
        for layer in layers:
            layer.spatial_norm.scale.fill_(DDF_SPATIAL_SCALE)
            for mlp in (layer.domain_mlp, layer.camera_mlp):
                if mlp is not None:
                    nn.init.zeros_(mlp[-1].weight)
                    nn.init.zeros_(mlp[-1].bias)
    filled = set(loaded) | fixed
    report = LoadReport(
        loaded=tuple(loaded) + tuple(sorted(fixed)),
        fresh=tuple(key for key in own if key not in filled),
        ignored=tuple(key for key in state_dict if key.removeprefix("module.").startswith("fc.")),
    )
    logger.info(
        "DDF init: %d tensors loaded, %d fresh, %d DDF tensors unused",
        len(report.loaded),
        len(report.fresh),
        len(report.ignored),
    )
    return report
