"""A torch Dataset that loads the images of a list of ReID items."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from .base import ReIDItem
from .multi_domain import DomainItem

# What PIL raises for unreadable files: damaged data (OSError, SyntaxError from verify()), an
# unknown format, or an image whose pixel count exceeds Image.MAX_IMAGE_PIXELS twice over.
_IMAGE_ERRORS = (OSError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)
_MAX_LISTED_FILES = 10


def check_images(paths: Iterable[str]) -> int:
    """Open every image's header (and verify it, as PIL can without decoding) to find bad files.

    Meant for evaluation images before a long training run: a missing, truncated, oversized or
    non-image file is found in seconds instead of at the first evaluation.

    Returns:
        The number of images checked.

    Raises:
        ValueError: naming every bad file (the first ten) and what is wrong with it.
    """
    checked, problems = 0, []
    for path in paths:
        checked += 1
        try:
            with Image.open(path) as image:
                image.verify()
        except FileNotFoundError:
            problems.append(f"{path}: no such file")
        except _IMAGE_ERRORS as error:
            problems.append(f"{path}: {type(error).__name__}: {error}")
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED_FILES])
        more = len(problems) - _MAX_LISTED_FILES
        raise ValueError(
            f"{len(problems)} of {checked} images cannot be read:\n  {shown}"
            + (f"\n  ... ({more} more)" if more > 0 else "")
        )
    return checked


class ImageDataset(Dataset):
    """Images of ReID items, loaded with PIL as RGB.

    Args:
        items: :class:`ReIDItem` (all given domain ``domain``) or :class:`DomainItem` (each
            with its own domain).
        transform: PIL image -> (3, H, W) float tensor, e.g. ``build_train_transforms()``;
            ``None`` gives the image as a float tensor in [0, 1].
        domain: domain id of ``ReIDItem`` items; ignored for ``DomainItem``.

    Each sample is ``{"image": (3, H, W) float tensor, "pid": int, "camid": int,
    "domain": int, "path": str}``; the default collate stacks them into a batch dict.
    """

    def __init__(
        self,
        items: Sequence[ReIDItem | DomainItem],
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        domain: int = 0,
    ) -> None:
        self.items = list(items)
        bad = next((i for i in self.items if not isinstance(i, (ReIDItem, DomainItem))), None)
        if bad is not None:
            raise TypeError(f"items must be ReIDItem or DomainItem, got {type(bad).__name__}")
        self.transform = transform
        self.domain = domain

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        try:
            with Image.open(item.path) as raw:
                image = raw.convert("RGB")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"image not found: {item.path}") from err
        except _IMAGE_ERRORS as err:
            raise OSError(f"cannot read image {item.path}: {type(err).__name__}: {err}") from err
        if self.transform is None:
            tensor = F.to_dtype(F.to_image(image), torch.float32, scale=True)
            tensor = tensor.as_subclass(torch.Tensor)
        else:
            tensor = self.transform(image)
        return {
            "image": tensor,
            "pid": item.pid,
            "camid": item.camid,
            "domain": item.domain if isinstance(item, DomainItem) else self.domain,
            "path": item.path,
        }
