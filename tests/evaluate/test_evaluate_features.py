"""extract_features on a tiny model and an in-memory dataset."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dcsd.evaluate import FeatureSet, extract_features


class TinyDataset(Dataset):
    """Seven random 3x4x6 images with labels and paths, as the ReID datasets yield them."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(7, 3, 4, 6, generator=generator)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {
            "image": self.images[index],
            "pid": index // 2,
            "camid": index % 3,
            "domain": 0,
            "path": f"img_{index}.jpg",
        }


class LeftBiasedModel(nn.Module):
    """Pools each image into 3 channel means plus its left column's means (not flip invariant),
    then a BatchNorm1d whose train-mode output would differ from its eval-mode output."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(6)
        self.bn.running_mean.fill_(0.25)
        self.bn.running_var.fill_(4.0)

    def forward(self, images):
        pooled = torch.cat([images.mean(dim=(2, 3)), images[..., 0].mean(dim=2)], dim=1)
        return self.bn(pooled)


def embed(images):
    pooled = torch.cat([images.mean(dim=(2, 3)), images[..., 0].mean(dim=2)], dim=1)
    return (pooled - 0.25) / math.sqrt(4.0 + 1e-5)


def test_features_labels_and_paths_in_loader_order():
    dataset = TinyDataset()
    model = LeftBiasedModel()
    result = extract_features(model, DataLoader(dataset, batch_size=3))
    assert isinstance(result, FeatureSet)
    assert len(result) == 7
    assert result.features.dtype == torch.float32 and result.features.device.type == "cpu"
    assert not result.features.requires_grad
    torch.testing.assert_close(result.features, embed(dataset.images))
    np.testing.assert_array_equal(result.pids, [0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(result.camids, [0, 1, 2, 0, 1, 2, 0])
    assert result.pids.dtype == np.int64
    assert result.paths == [f"img_{i}.jpg" for i in range(7)]


def test_model_mode_is_restored_and_eval_used():
    model = LeftBiasedModel()
    model.train()
    running_mean = model.bn.running_mean.clone()
    extract_features(model, DataLoader(TinyDataset(), batch_size=4))
    assert model.training
    # Eval mode: BatchNorm used (and did not update) its running statistics.
    assert torch.equal(model.bn.running_mean, running_mean)
    model.eval()
    extract_features(model, DataLoader(TinyDataset(), batch_size=4))
    assert not model.training


def test_flip_averages_image_and_mirror():
    dataset = TinyDataset()
    plain = extract_features(LeftBiasedModel(), DataLoader(dataset, batch_size=2))
    flipped = extract_features(LeftBiasedModel(), DataLoader(dataset, batch_size=2), flip=True)
    expected = (embed(dataset.images) + embed(dataset.images.flip(dims=[3]))) / 2
    torch.testing.assert_close(flipped.features, expected)
    assert not torch.allclose(flipped.features, plain.features)


def test_amp_flag_on_cpu_runs_bfloat16_and_returns_float32():
    class LinearModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 5)

        def forward(self, images):
            return self.linear(images.mean(dim=(2, 3)))

    model = LinearModel()
    loader = DataLoader(TinyDataset(), batch_size=7)
    exact = extract_features(model, loader)
    mixed = extract_features(model, loader, amp=True)
    assert mixed.features.dtype == torch.float32
    # bfloat16 has an 8-bit mantissa: close to, but not exactly, the float32 result.
    torch.testing.assert_close(mixed.features, exact.features, atol=0.05, rtol=0.05)
    assert not torch.equal(mixed.features, exact.features)


def test_float64_model_gets_float64_images_and_gives_float64_features():
    dataset = TinyDataset()
    model = LeftBiasedModel().double()
    result = extract_features(model, DataLoader(dataset, batch_size=3), flip=True)
    assert result.features.dtype == torch.float64
    images = dataset.images.double()
    expected = (embed(images) + embed(images.flip(dims=[3]))) / 2
    torch.testing.assert_close(result.features, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="float64 model"):
        extract_features(model, DataLoader(dataset, batch_size=3), amp=True)


def test_rejects_bad_batches_and_outputs():
    with pytest.raises(ValueError, match="lacks the key"):
        extract_features(LeftBiasedModel(), [{"image": torch.zeros(2, 3, 4, 6), "pid": [0, 1]}])
    with pytest.raises(TypeError, match=r"\(B, D\) tensor"):
        extract_features(nn.Identity(), DataLoader(TinyDataset(), batch_size=2))
    with pytest.raises(ValueError, match="no batches"):
        extract_features(LeftBiasedModel(), [])
    with pytest.raises(TypeError, match="nn.Module"):
        extract_features(lambda x: x, [])


def test_feature_set_validates_lengths():
    with pytest.raises(ValueError, match="camids"):
        FeatureSet(torch.zeros(3, 2), pids=[0, 1, 2], camids=[0, 1], paths=["a", "b", "c"])
    with pytest.raises(ValueError, match="2-D"):
        FeatureSet(torch.zeros(3), pids=[0, 1, 2], camids=[0, 1, 2], paths=["a", "b", "c"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_bfloat16_autocast_by_default():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 4)

        def forward(self, images):
            out = self.linear(images.mean(dim=(2, 3)))
            seen.append(out.dtype)
            return out

    result = extract_features(Probe().cuda(), DataLoader(TinyDataset(), batch_size=7))
    assert seen == [torch.bfloat16]
    assert result.features.dtype == torch.float32 and result.features.device.type == "cpu"
