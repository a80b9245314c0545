"""FeatureExtractor against the evaluation pipeline and a hand-made preprocessing; the same-person
threshold against a brute-force search over the pairs."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

import dcsd
from dcsd.data import ImageDataset, ReIDItem, build_eval_transforms
from dcsd.evaluate import FeatureSet, extract_features
from dcsd.inference import feature_distance, save_features
from dcsd.models import pretrained as pretrained_module

HEIGHT, WIDTH = 64, 32
# Sizes of the test images: none is the input size, so every one is resized.
SIZES = [(70, 41), (50, 30), (64, 33)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = dcsd.resnet50_reid(num_classes=0)
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, input_size=(3, HEIGHT, WIDTH))
    for module in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


@pytest.fixture(scope="module")
def files(arrays, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    paths = [folder / f"{i}.png" for i in range(len(arrays))]
    for array, path in zip(arrays, paths, strict=True):
        Image.fromarray(array).save(path)
    return paths


@pytest.fixture(scope="module")
def evaluation_features(model, files):
    """What the evaluation embeds for these files: ImageDataset + the card's transforms."""
    items = [ReIDItem(str(path), i, 0) for i, path in enumerate(files)]
    dataset = ImageDataset(items, transform=build_eval_transforms(model.pretrained_cfg))
    return F.normalize(extract_features(model, DataLoader(dataset, batch_size=2)).features, dim=1)


def test_every_input_form_gives_the_evaluation_features(model, arrays, files, evaluation_features):
    extractor = dcsd.FeatureExtractor(model, batch_size=2)
    pil = [Image.open(path) for path in files]
    tensors = [torch.from_numpy(a).permute(2, 0, 1) for a in arrays]
    for images in (
        files,
        [str(path) for path in files],
        pil,
        arrays,
        tensors,
        [t.float() / 255 for t in tensors],
        [t.double() / 255 for t in tensors],
        [files[0], pil[1], arrays[2]],
    ):
        features = extractor(images)
        assert features.dtype == torch.float32 and features.shape == (3, 2048)
        torch.testing.assert_close(features, evaluation_features)
    torch.testing.assert_close(torch.linalg.vector_norm(features, dim=1), torch.ones(3))
    # One image alone is one row; a batch array or tensor is many images.
    torch.testing.assert_close(extractor(arrays[1]), evaluation_features[1:2])
    torch.testing.assert_close(extractor(pil[2].convert("RGBA")), evaluation_features[2:3])
    same_size = np.stack([arrays[0], arrays[0]])
    torch.testing.assert_close(extractor(same_size), evaluation_features[[0, 0]])
    batch = torch.from_numpy(same_size).permute(0, 3, 1, 2)
    torch.testing.assert_close(extractor(batch), evaluation_features[[0, 0]])


def test_features_match_a_hand_made_preprocessing(model, arrays):
    """Bicubic PIL resize to the card's size, ImageNet mean/std, the model, L2 norm."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    resized = np.asarray(Image.fromarray(arrays[0]).resize((WIDTH, HEIGHT), Image.BICUBIC))
    pixels = torch.from_numpy(((resized / 255.0 - mean) / std).transpose(2, 0, 1)).float()
    with torch.no_grad():
        expected = F.normalize(model(pixels[None]), dim=1)
    torch.testing.assert_close(
        dcsd.FeatureExtractor(model)(arrays[0]), expected, atol=1e-4, rtol=1e-4
    )


def test_flip_averages_with_the_mirrored_image(model, arrays):
    image = Image.fromarray(arrays[0])
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    plain = dcsd.FeatureExtractor(model)
    with torch.no_grad():
        pair = model(torch.stack([plain.transform(image), plain.transform(mirrored)]))
    expected = F.normalize(pair.mean(dim=0, keepdim=True), dim=1)
    torch.testing.assert_close(dcsd.FeatureExtractor(model, flip=True)(image), expected)


def test_exif_orientation_applies_to_pil_images_as_to_files(model, arrays, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    Image.fromarray(arrays[0]).save(path, exif=exif.tobytes())
    extractor = dcsd.FeatureExtractor(model)
    upright = np.ascontiguousarray(np.rot90(arrays[0], k=-1))
    torch.testing.assert_close(extractor(Image.open(path)), extractor(path))
    torch.testing.assert_close(extractor(path), extractor(upright))


def test_a_model_folder_and_a_hub_id(model, files, evaluation_features, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    from_folder = dcsd.FeatureExtractor(folder, device="cpu")
    assert from_folder.model is not model and from_folder.model.num_classes == 0
    torch.testing.assert_close(from_folder(files), evaluation_features)

    requested = []

    def hf_hub_download(repo_id, filename, **options):
        requested.append((repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(pretrained_module, "hf_hub_download", hf_hub_download)
    from_hub = dcsd.FeatureExtractor("someone/reid-model", device="cpu")
    assert ("someone/reid-model", "model.safetensors") in requested
    torch.testing.assert_close(from_hub(files), evaluation_features)


def test_extract_keeps_labels_and_save_features_writes_them(model, files, tmp_path):
    from safetensors.torch import load_file

    result = dcsd.FeatureExtractor(model).extract(files, pids=[3, 4, 5], camids=[0, 1, 0])
    np.testing.assert_array_equal(result.pids, [3, 4, 5])
    assert result.paths == [str(path) for path in files]
    saved = load_file(save_features(result, tmp_path / "f.safetensors"))
    torch.testing.assert_close(saved["features"], result.features)
    assert saved["camids"].tolist() == [0, 1, 0]


def test_bad_inputs_are_named(model, arrays, tmp_path):
    extractor = dcsd.FeatureExtractor(model)
    grey = arrays[0][..., 0]
    for images, error, message in (
        ([arrays[0], arrays[0].astype(np.float32)], ValueError, "image 1: .*uint8 RGB.*float32"),
        (grey, ValueError, r"image 0: .*\(H, W, 3\).*\(70, 41\)"),
        (torch.rand(1, 8, 4), ValueError, r"image 0: a tensor must be \(3, H, W\)"),
        (torch.rand(3, 8, 4) * 255, ValueError, r"\[0, 1\].*model directly"),
        (torch.zeros(3, 8, 4, dtype=torch.int32), ValueError, "uint8 or float, got torch.int32"),
        ([arrays[0], 7], TypeError, "image 1 must be a path.*int"),
        (7, TypeError, "images must be an image"),
        ([], ValueError, "images is empty"),
        ([tmp_path / "missing.png"], FileNotFoundError, "missing.png"),
    ):
        with pytest.raises(error, match=message):
            extractor(images)
    with pytest.raises(ValueError, match=r"pids must have one entry per image \(1\), got 2"):
        extractor.extract([arrays[0]], pids=[1, 2])
    with pytest.raises(ValueError, match="has no pretrained_cfg"):
        dcsd.FeatureExtractor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        dcsd.FeatureExtractor(model, batch_size=0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, a model folder"):
        dcsd.FeatureExtractor(3)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        dcsd.FeatureExtractor(tmp_path / "nothing" / "here")


def labelled_features(seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 8))
    pids = np.repeat(np.arange(6), 5)
    camids = np.tile(np.arange(5), 6)
    features = torch.from_numpy(centres[pids] + 0.8 * rng.normal(size=(30, 8))).float()
    return FeatureSet(features, pids, camids, [str(i) for i in range(30)])


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.2])
def test_threshold_at_fpr_is_the_best_threshold_over_the_pairs(fpr):
    query, gallery = labelled_features(0), labelled_features(1)
    threshold, tpr = dcsd.threshold_at_fpr(query, gallery, fpr=fpr)
    # Brute force: every pair the cross-camera protocol keeps, every candidate threshold.
    a = query.features / query.features.norm(dim=1, keepdim=True)
    b = gallery.features / gallery.features.norm(dim=1, keepdim=True)
    distances = ((a[:, None] - b[None]) ** 2).sum(dim=2).numpy()
    same = query.pids[:, None] == gallery.pids[None]
    kept = ~(same & (query.camids[:, None] == gallery.camids[None]))
    genuine, impostor = distances[same & kept], distances[~same]
    rates = [((genuine <= t).mean(), (impostor <= t).mean()) for t in np.sort(genuine)]
    best = max(true for true, false in rates if false <= fpr)
    assert tpr == pytest.approx(best)
    assert (genuine <= threshold + 1e-6).mean() == pytest.approx(tpr)
    assert (impostor <= threshold - 1e-6).mean() <= fpr
    decided = dcsd.same_person(query.features, gallery.features, threshold).numpy()
    near = np.abs(distances - threshold) < 1e-5  # rounding of the two distance computations
    np.testing.assert_array_equal(decided[~near], (distances <= threshold)[~near])


def test_distance_and_same_person_on_single_features():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    # Normalised: (1, 0) against (0, 1) and (1, 0): squared distances 2 and 0.
    torch.testing.assert_close(feature_distance(a, b), torch.tensor([[2.0, 0.0]]))
    assert dcsd.same_person(a, b, 1.0).tolist() == [[False, True]]
    with pytest.raises(ValueError, match="threshold must be a finite distance"):
        dcsd.same_person(a, b, float("nan"))
    with pytest.raises(ValueError, match=r"a must be \(D,\) or \(N, D\)"):
        feature_distance(torch.zeros(1, 2, 2), b)


def test_an_unreachable_fpr_is_refused():
    query = FeatureSet(torch.tensor([[1.0, 0.0]]), [0], [0], ["q"])
    gallery = FeatureSet(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), [0, 1], [1, 1], ["a", "b"])
    # The impostor is nearer than the genuine match: accepting it costs FPR 1.
    with pytest.raises(ValueError, match="no threshold accepts a same-person pair at FPR <= 0.5"):
        dcsd.threshold_at_fpr(query, gallery, fpr=0.5)
