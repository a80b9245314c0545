"""The optimizer with parameter groups, as fast-reid builds it.

The model says how its parameters group (timm's ``no_weight_decay()`` / ``group_matcher()``):
:func:`build_optimizer` asks ``model.parameter_groups()`` (a partition by role, e.g.
``backbone``, ``generators``, ``heads``) and ``model.no_weight_decay()`` (parameter names), and
names no layer of the model. Four optimizer groups follow:

- ``generators`` / ``generators_no_decay``: the model's ``"generators"`` group (the DCSD filter
  generators, fresh even on a pretrained backbone, with their own learning-rate factor), split
  by weight decay;
- ``decay`` / ``no_decay``: every other parameter, split the same way: ``no_weight_decay()``
  names take their own weight decay (fast-reid's ``WEIGHT_DECAY_NORM``).

A model without these methods (any ``nn.Module``) is asked through its layers: those that
have the methods (a :class:`~dcsd.modules.DCSDConv` inside it) say what their parameters are,
every other parameter is ``backbone``, and its parameters of one dimension or less (biases,
normalisation weights) take the normalisation weight decay, timm's default.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

OPTIMIZERS = ("adam", "adamw", "sgd")
GENERATOR_GROUPS = ("generators", "generators_no_decay")  # the groups of the filter generators
GENERATORS = "generators"  # the key of model.parameter_groups() that GENERATOR_GROUPS hold


def model_parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``model.parameter_groups()`` (DDP unwrapped), checked to be disjoint and to cover every
    parameter; ``{"backbone": all parameters}`` for a model without the method.

    Raises:
        ValueError: a parameter is in two groups or in none (the message names it).
    """
    model = model.module if isinstance(model, DistributedDataParallel) else model
    if hasattr(model, "parameter_groups"):
        groups = model.parameter_groups()
    else:
        groups = _composed_groups(model)
    seen: dict[int, str] = {}
    for key, parameters in groups.items():
        for parameter in parameters:
            if id(parameter) in seen:
                raise ValueError(
                    f"{type(model).__name__}.parameter_groups() puts a parameter in both "
                    f"{seen[id(parameter)]!r} and {key!r}: the groups must be disjoint"
                )
            seen[id(parameter)] = key
    left_out = [name for name, p in model.named_parameters() if id(p) not in seen]
    if left_out:
        raise ValueError(
            f"{type(model).__name__}.parameter_groups() leaves out {len(left_out)} parameter(s) "
            f"(e.g. {left_out[0]}): the groups must cover every parameter"
        )
    return groups


def _composed_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The groups of a model without ``parameter_groups()``: what its layers that have one say
    (e.g. a :class:`~dcsd.modules.DCSDConv` inside it; the innermost layer decides), and
    ``backbone`` for every other parameter."""
    role: dict[int, str] = {}
    for module in model.modules():
        if module is not model and hasattr(module, "parameter_groups"):
            for key, parameters in module.parameter_groups().items():
                role |= {id(parameter): key for parameter in parameters}
    groups: dict[str, list[nn.Parameter]] = {"backbone": []}
    for parameter in model.parameters():
        groups.setdefault(role.get(id(parameter), "backbone"), []).append(parameter)
    return groups


def no_weight_decay_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters ``model.no_weight_decay()`` names (DDP unwrapped). A model without
    the method: those of one dimension or less (biases, normalisation weights; timm's default)
    and those its layers' own ``no_weight_decay()`` name."""
    model = model.module if isinstance(model, DistributedDataParallel) else model
    if hasattr(model, "no_weight_decay"):
        names = set(model.no_weight_decay())
    else:
        names = {name for name, p in model.named_parameters() if p.ndim <= 1}
        for module_name, module in model.named_modules():
            if module is not model and hasattr(module, "no_weight_decay"):
                names |= {f"{module_name}.{name}" for name in module.no_weight_decay()}
    return {id(p) for name, p in model.named_parameters() if name in names}


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
        model: the model (DDP-wrapped or not); its ``parameter_groups()`` and
            ``no_weight_decay()`` decide the groups (see the module's docstring).
        name: ``"adam"`` (BoT / DCSD: L2 added to the gradient), ``"adamw"`` (decoupled weight
            decay) or ``"sgd"`` (with ``momentum``).
        lr: base learning rate.
        weight_decay: weight decay of convolution and linear weights.
        weight_decay_norm: weight decay of the parameters ``model.no_weight_decay()`` names
            (normalisation parameters, FilterNorm scales and biases); ``None``: same as
            ``weight_decay`` (BoT's recipe decays everything).
        generator_lr_factor: learning-rate multiplier of the model's ``"generators"`` group.
        generator_weight_decay: weight decay of the generators' weights; ``None``: same as
            ``weight_decay`` (their norm scales and biases follow ``weight_decay_norm``).
        momentum: SGD momentum.

    Returns:
        The optimizer; each group carries a ``"name"`` (``decay``, ``no_decay``,
        ``generators``, ``generators_no_decay``) and empty groups are left out. Learning-rate
        schedulers scale each group from its own initial ``lr``.

    Raises:
        ValueError: unknown ``name``, a negative rate, or parameter groups of the model that
            overlap or leave a parameter out.
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
    generators = {id(p) for p in model_parameter_groups(model).get(GENERATORS, ())}
    no_decay = no_weight_decay_parameters(model)
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
