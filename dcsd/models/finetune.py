"""Fine-tuning a trained model on other data: its weights into a model sized for the new data."""

from __future__ import annotations

import os

from .pretrained import load_model
from .resnet import ReIDResNet

# The config entries that size the heads: the only ones a fine-tuned model may change.
_HEAD_OPTIONS = ("num_classes", "num_domains", "num_cameras")


def init_from(model: ReIDResNet, source: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Start ``model``, built for new training data, from a trained model: everything but the
    heads that do not fit the new data (fast-reid's fine-tuning from ``MODEL.WEIGHTS``).

    The trained model is loaded as :func:`dcsd.load_model` loads it (a model folder, a training
    checkpoint or a Hub id; verified), its heads are resized to ``model``'s with
    :meth:`ReIDResNet.reset_heads`, and all its tensors are copied into ``model``: the backbone,
    the DCSD filter generators and the domain and camera MLPs are the trained ones, the
    rebuilt heads fresh. ``model``'s ``pretrained_cfg`` is left as it is.

    Args:
        model: the model to train, e.g. ``dcsd.create_model(name, **data.model_kwargs())``.
        source: the trained model's folder or Hub id.

    Returns:
        ``{head name: (trained size, new size)}`` of the heads started fresh (empty when the
        trained heads fit the new data).

    Raises:
        TypeError: ``model`` is not a :class:`ReIDResNet`.
        ValueError: the trained model has another architecture or other options than
            ``model`` (named with both values), or as :func:`dcsd.load_model`.
    """
    if not isinstance(model, ReIDResNet):
        raise TypeError(f"model must be a dcsd ReIDResNet, got {type(model).__name__}")
    trained = load_model(source)
    ours, theirs = model.config, trained.config
    differences = [
        f"{key} {theirs.get(key)!r} (the model's: {ours.get(key)!r})"
        for key in sorted(ours.keys() | theirs.keys())
        if key not in _HEAD_OPTIONS and ours.get(key) != theirs.get(key)
    ]
    if differences:
        raise ValueError(
            f"cannot start the model from {os.fspath(source)}: it differs in more than its "
            f"heads: {'; '.join(differences)}. Build the model with the trained model's options "
            "and the new data's sizes"
        )
    dropped = trained.reset_heads(
        num_classes=model.num_classes,
        num_domains=model.num_domains,
        num_cameras=model.num_cameras,
    )
    model.load_state_dict(trained.state_dict())
    return dropped
