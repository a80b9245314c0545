"""Embedding extraction for evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class FeatureSet:
    """Embeddings of a query or gallery split, with the labels the ranking needs.

    Attributes:
        features: (N, D) float32 CPU tensor (float64 from a float64 model).
        pids: (N,) int64 identity labels.
        camids: (N,) int64 camera IDs.
        paths: N image paths.
    """

    features: torch.Tensor
    pids: np.ndarray
    camids: np.ndarray
    paths: list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.features, torch.Tensor) or self.features.dim() != 2:
            shape = getattr(self.features, "shape", None)
            raise ValueError(f"features must be a 2-D (N, D) tensor, got shape {shape}")
        self.pids = np.asarray(self.pids, dtype=np.int64)
        self.camids = np.asarray(self.camids, dtype=np.int64)
        self.paths = list(self.paths)
        size = self.features.shape[0]
        for name in ("pids", "camids", "paths"):
            if len(getattr(self, name)) != size:
                raise ValueError(
                    f"{name} must have one entry per feature ({size}), "
                    f"got {len(getattr(self, name))}"
                )

    def __len__(self) -> int:
        return self.features.shape[0]


def _labels(batch: Mapping[str, Any], key: str) -> np.ndarray:
    values = batch[key]
    if isinstance(values, torch.Tensor):
        return values.cpu().numpy().astype(np.int64).reshape(-1)
    return np.asarray(values, dtype=np.int64).reshape(-1)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    device: torch.device | str | None = None,
    amp: bool | None = None,
    flip: bool = False,
) -> FeatureSet:
    """Run ``model`` over ``loader`` in eval mode and collect its embeddings.

    The model is switched to eval mode for the pass and back to its previous mode afterwards;
    no gradients are kept. The paper evaluates without flipping, hence ``flip=False``. Images are
    cast to the dtype of the model's floating-point parameters, so a ``model.double()`` gives
    float64 embeddings: results that do not depend on the CPU's float32 arithmetic.

    Args:
        model: maps (B, 3, H, W) images to (B, D) embeddings in eval mode.
        loader: yields dict batches ``{"image": (B, 3, H, W), "pid": (B,), "camid": (B,),
            "path": B strings}`` (other keys, such as ``"domain"``, are ignored).
        device: where to run; default: the device of the model's first parameter (CPU for a
            model without parameters).
        amp: bfloat16 autocast; default on for CUDA, off otherwise (and refused for a float64
            model, whose point is exact arithmetic).
        flip: average each embedding with that of the horizontally flipped image.

    Returns:
        A :class:`FeatureSet` with CPU features in loader order: float64 for a float64 model,
        float32 otherwise.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    first = next(model.parameters(), None)
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    floating = [p.dtype for p in model.parameters() if p.dtype.is_floating_point]
    input_dtype = floating[0] if floating else torch.float32
    output_dtype = torch.float64 if input_dtype == torch.float64 else torch.float32
    if amp is None:
        amp = device.type == "cuda" and output_dtype != torch.float64
    if amp and output_dtype == torch.float64:
        raise ValueError("amp=True runs in bfloat16; a float64 model asks for exact arithmetic")
    features, pids, camids, paths = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        for index, batch in enumerate(loader):
            missing = [key for key in ("image", "pid", "camid", "path") if key not in batch]
            if missing:
                raise ValueError(f"loader batch {index} lacks the key(s) {missing}")
            images = batch["image"].to(device, dtype=input_dtype, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                embedding = model(images)
                if not isinstance(embedding, torch.Tensor) or embedding.dim() != 2:
                    raise TypeError(
                        "model must return a (B, D) tensor in eval mode, got "
                        f"{getattr(embedding, 'shape', type(embedding).__name__)}"
                    )
                if flip:
                    flipped = model(images.flip(dims=[3]))
                    embedding = (embedding.to(output_dtype) + flipped.to(output_dtype)) / 2
            features.append(embedding.to(output_dtype).cpu())
            pids.append(_labels(batch, "pid"))
            camids.append(_labels(batch, "camid"))
            batch_paths = batch["path"]
            paths.extend([batch_paths] if isinstance(batch_paths, str) else batch_paths)
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("loader yielded no batches")
    return FeatureSet(
        features=torch.cat(features),
        pids=np.concatenate(pids),
        camids=np.concatenate(camids),
        paths=paths,
    )
