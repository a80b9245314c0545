"""Features of one's own person crops, and the "same person?" decision on them.

:class:`FeatureExtractor` runs a model on image files, PIL images, numpy arrays or tensors
through the evaluation pipeline itself: each image is read as :func:`dcsd.data.read_image` reads
a file, preprocessed with the transforms the weights' card names
(:func:`dcsd.data.build_eval_transforms`) and embedded by :func:`dcsd.evaluate.extract_features`,
so its features are the ones the evaluation ranks, L2-normalised. :func:`feature_distance` is the
evaluation's distance on them, :func:`same_person` thresholds it, and :func:`threshold_at_fpr`
takes the threshold from a labelled set's ROC (the TPR at a chosen FPR).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from dcsd.data.image_dataset import read_image, rgb_image
from dcsd.data.transforms import build_eval_transforms
from dcsd.evaluate.distance import pairwise_distance
from dcsd.evaluate.features import FeatureSet, extract_features
from dcsd.evaluate.roc import roc_metrics
from dcsd.models.pretrained import load_model

# One image: a file, a decoded image, an (H, W, 3) uint8 array or a (3, H, W) tensor.
ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
# The label of an image whose identity or camera is unknown.
_UNLABELLED = -1


class FeatureExtractor:
    """L2-normalised embeddings of person crops, as the evaluation computes them.

    Args:
        model: a dcsd model (an ``nn.Module`` with a ``pretrained_cfg`` card), a model folder
            (``config.json`` + ``model.safetensors``) or a Hub repository id; folders and Hub
            ids are loaded with :func:`dcsd.load_model` without the identity classifier.
        device: where to run; default: the device of a model passed in, CUDA (when available,
            else CPU) for a model loaded from a folder or the Hub, which is moved there.
        batch_size: images per forward pass.
        flip: average each embedding with that of the mirrored image (the paper does not).
        image_size: (H, W) in place of the card's input size; the card's mean, std and
            interpolation still apply.
        amp: bfloat16 autocast; default on for CUDA, as the evaluation.

    Call it on one image or a sequence of images (see :meth:`__call__`); every input form gives
    the same features for the same pixels.

    Raises:
        TypeError: ``model`` is neither a module nor a path / Hub id.
        ValueError: a bad ``batch_size``, or a module without a ``pretrained_cfg`` card (its
            input size and normalisation are unknown).
    """

    def __init__(
        self,
        model: nn.Module | str | os.PathLike,
        device: torch.device | str | None = None,
        batch_size: int = 32,
        flip: bool = False,
        image_size: Sequence[int] | None = None,
        amp: bool | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model, num_classes=0)
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model = model.to(device)
        elif not isinstance(model, nn.Module):
            raise TypeError(
                "model must be a torch.nn.Module, a model folder or a Hub repo id, got "
                f"{type(model).__name__}"
            )
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        card = getattr(model, "pretrained_cfg", None)
        if card is None:
            raise ValueError(
                f"model {type(model).__name__} has no pretrained_cfg, so its input size, mean/std "
                "and interpolation are unknown: use a dcsd model (dcsd.create_model, "
                "dcsd.load_model) or set model.pretrained_cfg"
            )
        self.model = model
        self.transform = build_eval_transforms(card, size=image_size)
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.flip = flip
        self.amp = amp

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Embed one image or a sequence of images.

        Args:
            images: an image file path; a PIL image (any mode PIL converts to RGB; its EXIF
                orientation applies, as for files); an (H, W, 3) uint8 array; a (3, H, W)
                tensor, uint8 or floating point in [0, 1] (``uint8 / 255``, as
                ``torchvision.transforms.v2.ToDtype(scale=True)`` gives); or a sequence of
                these, an (N, H, W, 3) array or an (N, 3, H, W) tensor.

        Returns:
            (N, D) float32 CPU features, each of L2 norm 1, in input order (N = 1 for a single
            image).

        Raises:
            TypeError, ValueError: an input of another type, shape, dtype or range (the message
                names its position); FileNotFoundError, OSError: an unreadable file (named).
        """
        return self.extract(_as_list(images)).features

    def extract(
        self,
        images: Sequence[ImageInput],
        pids: Sequence[int] | None = None,
        camids: Sequence[int] | None = None,
    ) -> FeatureSet:
        """Embed a sequence of images and keep their labels, as the evaluation does.

        Args:
            images: as :meth:`__call__` takes them, as a sequence.
            pids, camids: one label per image (default -1, unknown).

        Returns:
            A :class:`dcsd.evaluate.FeatureSet` with the L2-normalised float32 features, the
            labels, and each image's path (``"<input i>"`` for images not read from files).
        """
        images = list(images)
        if not images:
            raise ValueError("images is empty: give at least one image")
        labels = {}
        for name, values in (("pids", pids), ("camids", camids)):
            if values is None:
                values = [_UNLABELLED] * len(images)
            if len(values) != len(images):
                raise ValueError(
                    f"{name} must have one entry per image ({len(images)}), got {len(values)}"
                )
            labels[name] = np.asarray(values, dtype=np.int64)
        result = extract_features(
            self.model,
            self._batches(images, labels["pids"], labels["camids"]),
            device=self.device,
            amp=self.amp,
            flip=self.flip,
        )
        return dataclasses.replace(result, features=F.normalize(result.features, dim=1))

    def _batches(
        self, images: list[ImageInput], pids: np.ndarray, camids: np.ndarray
    ) -> Iterator[dict[str, Any]]:
        for start in range(0, len(images), self.batch_size):
            stop = min(start + self.batch_size, len(images))
            chunk = images[start:stop]
            yield {
                "image": torch.stack(
                    [self.transform(_to_rgb(image, start + i)) for i, image in enumerate(chunk)]
                ),
                "pid": torch.from_numpy(pids[start:stop]),
                "camid": torch.from_numpy(camids[start:stop]),
                "path": [_name(image, start + i) for i, image in enumerate(chunk)],
            }


def _as_list(images: Any) -> list[ImageInput]:
    """One image or many, as a list of single images."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
        return [images]
    if isinstance(images, Sequence):
        return list(images)
    raise TypeError(
        "images must be an image (path, PIL image, HxWx3 uint8 array, 3xHxW tensor) or a "
        f"sequence of them, got {type(images).__name__}"
    )


def _name(image: ImageInput, index: int) -> str:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"<input {index}>"


def _to_rgb(image: ImageInput, index: int) -> Image.Image:
    """An 8-bit RGB PIL image, as :func:`read_image` gives a file's pixels."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return rgb_image(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"image {index}: a numpy image must be (H, W, 3) uint8 RGB, got shape "
                f"{image.shape} dtype {image.dtype}"
            )
        return Image.fromarray(image, mode="RGB")
    if isinstance(image, torch.Tensor):
        return Image.fromarray(_tensor_to_uint8(image, index).permute(1, 2, 0).numpy(), "RGB")
    raise TypeError(
        f"image {index} must be a path, PIL image, numpy array or tensor, got "
        f"{type(image).__name__}"
    )


def _tensor_to_uint8(image: torch.Tensor, index: int) -> torch.Tensor:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image {index}: a tensor must be (3, H, W), got {tuple(image.shape)}")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        return image.contiguous()
    if not image.dtype.is_floating_point:
        raise ValueError(f"image {index}: a tensor must be uint8 or float, got {image.dtype}")
    if not bool(torch.isfinite(image).all()) or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"image {index}: a float tensor must hold pixels in [0, 1] (uint8 / 255), got values "
            f"in [{float(image.min()):.3g}, {float(image.max()):.3g}]; an already normalised "
            "batch goes to the model directly (extractor.model.eval()(batch))"
        )
    return image.double().mul(255).round().to(torch.uint8).contiguous()


def save_features(features: FeatureSet, path: str | os.PathLike) -> Path:
    """Write a features file: ``features`` (N, D) float32, ``pids`` and ``camids`` (N,) int64
    (-1 when unknown) as safetensors tensors, the image paths as JSON in its metadata.

    Returns:
        The path written.
    """
    path = Path(path)
    save_file(
        {
            "features": features.features.contiguous(),
            "pids": torch.as_tensor(features.pids),
            "camids": torch.as_tensor(features.camids),
        },
        str(path),
        metadata={"paths": json.dumps(features.paths)},
    )
    return path


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The evaluation's distance between features: squared Euclidean distance of the
    L2-normalised features (``2 - 2 cos``, in [0, 4]).

    Args:
        a: (D,) or (N, D) features.
        b: (D,) or (M, D) features.

    Returns:
        (N, M) float32 distances (a 1-D input counts as one row).
    """
    a, b = (_rows(name, x) for name, x in (("a", a), ("b", b)))
    return pairwise_distance(F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1))


def same_person(a: torch.Tensor, b: torch.Tensor, threshold: float) -> torch.Tensor:
    """Whether each pair of features shows one person: :func:`feature_distance` at most
    ``threshold`` (take it from :func:`threshold_at_fpr`).

    Returns:
        (N, M) bool tensor.
    """
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite distance, got {threshold}")
    return feature_distance(a, b) <= threshold


def threshold_at_fpr(
    query: FeatureSet,
    gallery: FeatureSet,
    fpr: float = 1e-3,
    cross_camera: bool = True,
) -> tuple[float, float]:
    """The distance threshold that accepts the most same-person pairs while accepting at most a
    fraction ``fpr`` of different-person pairs, on labelled query and gallery features.

    The pairs and the curve are :func:`dcsd.evaluate.roc_metrics`' on the evaluation's distances
    (:func:`feature_distance`); the threshold is a measured same-person distance, and applying
    it to these pairs gives exactly the returned TPR at an FPR of at most ``fpr``.

    Args:
        query, gallery: features with identity and camera labels (e.g. from
            :meth:`FeatureExtractor.extract` or :func:`dcsd.evaluate.extract_features`).
        fpr: the largest fraction of different-person pairs accepted, in (0, 1].
        cross_camera: leave out same-identity pairs from one camera, as the ranking does.

    Returns:
        ``(threshold, tpr)``: use ``same_person(a, b, threshold)``.

    Raises:
        ValueError: no threshold accepts any same-person pair at that FPR (the data are too
            small or too hard for it: choose a larger ``fpr``), or as :func:`roc_metrics`.
    """
    for name, features in (("query", query), ("gallery", gallery)):
        if not isinstance(features, FeatureSet):
            raise TypeError(f"{name} must be a FeatureSet, got {type(features).__name__}")
    distances = feature_distance(query.features, gallery.features)
    curve = roc_metrics(
        distances, query.pids, gallery.pids, query.camids, gallery.camids, cross_camera, (fpr,)
    )
    allowed = curve["fpr"] <= fpr
    best = int(np.flatnonzero(allowed)[np.argmax(curve["tpr"][allowed])])
    threshold, tpr = float(curve["thresholds"][best]), float(curve["tpr"][best])
    if not np.isfinite(threshold) or tpr == 0:
        raise ValueError(
            f"no threshold accepts a same-person pair at FPR <= {fpr:g} on these "
            f"{len(query)} x {len(gallery)} pairs: choose a larger fpr"
        )
    return threshold, tpr


def _rows(name: str, features: torch.Tensor) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() == 1:
        return features[None]
    if features.dim() != 2:
        raise ValueError(f"{name} must be (D,) or (N, D) features, got {tuple(features.shape)}")
    return features
