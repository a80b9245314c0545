"""BoT transforms and ImageDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dcsd.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DomainItem,
    ImageDataset,
    ReIDItem,
    build_test_transforms,
    build_train_transforms,
)


def image(height=40, width=20, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_test_transform_resizes_and_normalises():
    out = build_test_transforms(size=(32, 16))(image(32, 16))
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    pixels = torch.from_numpy(np.array(image(32, 16))).permute(2, 0, 1) / 255
    mean, std = (
        torch.tensor(IMAGENET_MEAN)[:, None, None],
        torch.tensor(IMAGENET_STD)[:, None, None],
    )
    torch.testing.assert_close(out, (pixels - mean) / std)
    assert build_test_transforms()(image()).shape == (3, 256, 128)


def test_train_transform_shape_and_default_size():
    torch.manual_seed(0)
    out = build_train_transforms()(image())
    assert out.shape == (3, 256, 128) and out.dtype == torch.float32
    # Plain tensors, not torchvision's Image subclass, go on to the model.
    assert type(out) is torch.Tensor and type(build_test_transforms()(image())) is torch.Tensor


def test_train_without_augmentation_equals_test():
    train = build_train_transforms(size=(32, 16), flip_p=0, pad=0, erasing_p=0)
    test = build_test_transforms(size=(32, 16))
    torch.testing.assert_close(train(image()), test(image()))


def test_flip():
    train = build_train_transforms(size=(32, 16), flip_p=1, pad=0, erasing_p=0)
    flipped = image().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    torch.testing.assert_close(train(image()), build_test_transforms(size=(32, 16))(flipped))


def test_pad_and_crop_is_a_window_of_the_padded_image():
    pad = 3
    test = build_test_transforms(size=(32, 16))(image())
    # Zero padding in pixel space is (0 - mean) / std after normalisation.
    fill = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    padded = fill[:, None, None].repeat(1, 32 + 2 * pad, 16 + 2 * pad)
    padded[:, pad:-pad, pad:-pad] = test
    train = build_train_transforms(size=(32, 16), flip_p=0, pad=pad, erasing_p=0)
    torch.manual_seed(1)
    shifts = set()
    for _ in range(20):
        out = train(image())
        windows = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.allclose(out, padded[:, dy : dy + 32, dx : dx + 16], atol=1e-6)
        ]
        assert windows
        shifts.add(windows[0])
    assert len(shifts) > 1


def test_random_erasing_fills_with_the_mean():
    train = build_train_transforms(size=(32, 16), flip_p=0, pad=0, erasing_p=1)
    test = build_test_transforms(size=(32, 16))(image())
    torch.manual_seed(0)
    out = train(image())
    erased = (out != test).any(dim=0)
    assert 0 < erased.float().mean() <= 0.34
    assert torch.all(out[:, erased] == 0)


def test_transform_arguments_are_checked():
    with pytest.raises(ValueError, match="size"):
        build_train_transforms(size=(256,))
    with pytest.raises(ValueError, match="flip_p"):
        build_train_transforms(flip_p=1.5)
    with pytest.raises(ValueError, match="pad"):
        build_train_transforms(pad=-1)
    with pytest.raises(ValueError, match="std"):
        build_test_transforms(std=(0.2, 0.2, 0.0))


def test_image_dataset_items(tmp_path):
    path = tmp_path / "0001_c1s1_000151_01.jpg"
    image(16, 8).save(path)
    sample = ImageDataset([ReIDItem(str(path), 5, 2)], domain=3)[0]
    assert sample["image"].shape == (3, 16, 8) and sample["image"].dtype == torch.float32
    assert type(sample["image"]) is torch.Tensor
    assert 0 <= sample["image"].min() and sample["image"].max() <= 1
    assert (sample["pid"], sample["camid"], sample["domain"], sample["path"]) == (
        5,
        2,
        3,
        str(path),
    )
    domain_sample = ImageDataset([DomainItem(str(path), 7, 9, 1)], domain=3)[0]
    assert (domain_sample["pid"], domain_sample["camid"], domain_sample["domain"]) == (7, 9, 1)
    transformed = ImageDataset([ReIDItem(str(path), 5, 2)], build_test_transforms(size=(32, 16)))
    assert transformed[0]["image"].shape == (3, 32, 16)


def test_image_dataset_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        ImageDataset([ReIDItem(str(missing), 0, 0)])[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.jpg"):
        ImageDataset([ReIDItem(str(broken), 0, 0)])[0]
    with pytest.raises(TypeError, match="ReIDItem"):
        ImageDataset([("a.jpg", 0, 0)])
