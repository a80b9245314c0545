"""The optimizer with parameter groups, as fast-reid builds it.

Three kinds of parameters are told apart:

- ``generators``: the DCSD layers' filter generators (channel branch, spatial branch and their
  FilterNorm scales): freshly initialised even when the backbone is pretrained, so they may get
  their own learning-rate factor;
- ``no_decay``: normalisation weights and biases (BatchNorm, GroupNorm, LayerNorm), FilterNorm
  scales and every bias: their own weight decay (fast-reid's ``WEIGHT_DECAY_NORM``);
- ``decay``: everything else (convolution and linear weights).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from dcsd.modules import DCSDConv, FilterNorm

OPTIMIZERS = ("adam", "adamw", "sgd")
GENERATOR_GROUPS = ("generators", "generators_no_decay")  # the groups of the filter generators
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, FilterNorm)


def _generator_parameters(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for layer in model.modules():
        if isinstance(layer, DCSDConv):
            for part in (
                layer.channel_branch,
                layer.spatial_branch,
                layer.channel_norm,
                layer.spatial_norm,
            ):
                if part is not None:
                    ids |= {id(p) for p in part.parameters()}
    return ids


def _no_decay_parameters(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) or name == "bias":
                ids.add(id(parameter))
    return ids


def group_settings(
    *,
    lr: float,
    weight_decay: float,
    weight_decay_norm: float | None = None,
    generator_lr_factor: float = 1.0,
    generator_weight_decay: float | None = None,
) -> dict[str, tuple[float, float]]:
    """``{group name: (lr, weight decay)}`` as :func:`build_optimizer` assigns them."""
    norm_decay = weight_decay if weight_decay_norm is None else weight_decay_norm
    generator_decay = weight_decay if generator_weight_decay is None else generator_weight_decay
    return {
        "decay": (lr, weight_decay),
        "no_decay": (lr, norm_decay),
        "generators": (lr * generator_lr_factor, generator_decay),
        "generators_no_decay": (lr * generator_lr_factor, norm_decay),
    }


def optimizer_settings(config: Any) -> dict[str, Any]:
    """The rates of a :class:`TrainConfig`: :func:`group_settings`' keyword arguments."""
    return {
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "weight_decay_norm": config.weight_decay_norm,
        "generator_lr_factor": config.generator_lr_factor,
        "generator_weight_decay": config.generator_weight_decay,
    }


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "adam",
    lr: float = 3.5e-4,
    weight_decay: float = 5e-4,
    weight_decay_norm: float | None = None,
    generator_lr_factor: float = 1.0,
    generator_weight_decay: float | None = None,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """An optimizer over ``model``'s trainable parameters, in named parameter groups.

    Args:
        model: the model (DDP-wrapped or not).
        name: ``"adam"`` (BoT / DCSD: L2 added to the gradient), ``"adamw"`` (decoupled weight
            decay) or ``"sgd"`` (with ``momentum``).
        lr: base learning rate.
        weight_decay: weight decay of convolution and linear weights.
        weight_decay_norm: weight decay of normalisation parameters, FilterNorm scales and
            biases; ``None``: same as ``weight_decay`` (BoT's recipe decays everything).
        generator_lr_factor: learning-rate multiplier of the DCSD filter generators.
        generator_weight_decay: weight decay of the generators' weights; ``None``: same as
            ``weight_decay`` (their norm scales and biases follow ``weight_decay_norm``).
        momentum: SGD momentum.

    Returns:
        The optimizer; each group carries a ``"name"`` (``decay``, ``no_decay``,
        ``generators``, ``generators_no_decay``) and empty groups are left out. Learning-rate
        schedulers scale each group from its own initial ``lr``.

    Raises:
        ValueError: unknown ``name`` or a negative rate.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    for label, value in (
        ("lr", lr),
        ("weight_decay", weight_decay),
        ("momentum", momentum),
        ("generator_lr_factor", generator_lr_factor),
    ):
        if not value >= 0:
            raise ValueError(f"{label} must be >= 0, got {value!r}")
    settings = group_settings(
        lr=lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        generator_lr_factor=generator_lr_factor,
        generator_weight_decay=generator_weight_decay,
    )
    generators = _generator_parameters(model)
    no_decay = _no_decay_parameters(model)
    members: dict[str, list[nn.Parameter]] = {key: [] for key in settings}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        key = "generators" if id(parameter) in generators else "decay"
        if id(parameter) in no_decay:
            key = "no_decay" if key == "decay" else "generators_no_decay"
        members[key].append(parameter)
    groups: list[dict[str, Any]] = [
        {"name": key, "params": params, "lr": settings[key][0], "weight_decay": settings[key][1]}
        for key, params in members.items()
        if params
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    optimizer_class = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=lr)
