"""The start a command gives a freshly built model (dcsd train and dcsd extract share it)."""

from __future__ import annotations

from torch import nn

import dcsd
from dcsd.models import load_imagenet_backbone, load_pretrained, load_weights


def load_start(model: nn.Module, start: str) -> None:
    """Load ``start`` into ``model``: ``"imagenet"`` (torchvision's backbone), a name of the
    weights zoo (:func:`dcsd.list_pretrained`), ``"none"`` (nothing), or else a model folder or
    weights file (:func:`dcsd.models.load_weights`). Each is its own call, so the card records it.
    """
    if start == "imagenet":
        load_imagenet_backbone(model)
    elif start in dcsd.list_pretrained():
        load_pretrained(model, start)
    elif start != "none":
        load_weights(model, start)
