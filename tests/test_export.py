"""ONNX export of the feature extractor, checked with onnxruntime against PyTorch."""

import numpy as np
import pytest
import torch

import dcsd
from dcsd.export import export_onnx

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def test_exported_embedding_matches_pytorch_with_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = dcsd.resnet50_dcsd(num_classes=7).eval()
    path = export_onnx(model, tmp_path / "dcsd.onnx", image_size=(64, 32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 64, 32)
    (onnx_embedding,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images).numpy()
    assert onnx_embedding.shape == (3, 2048)
    np.testing.assert_allclose(onnx_embedding, expected, rtol=1e-4, atol=1e-4)
    assert all(
        layer.backend == "auto" for layer in model.modules() if isinstance(layer, dcsd.DCSDConv)
    )


def test_rejects_non_module(tmp_path):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export_onnx("resnet50_dcsd", tmp_path / "x.onnx")
