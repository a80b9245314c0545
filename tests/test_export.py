"""Export for deployment: the ONNX graph (torch.export + onnxscript) checked with onnxruntime, and
the torch.export program loaded by PyTorch alone, both against the PyTorch model's embedding."""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import dcsd
from dcsd.export import export_onnx, save_exported_program

SIZE = (64, 32)


def build(name):
    torch.manual_seed(0)
    model = dcsd.create_model(name, num_classes=7)
    for module in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def embed(model, images):
    with torch.no_grad():
        return model.eval()(images).numpy()


@pytest.mark.slow  # torch.export and the translation of 16 DCSD layers: about a minute each
@pytest.mark.parametrize("name", ["resnet50_reid", "resnet50_dcsd"])
def test_onnx_graph_matches_pytorch_with_a_dynamic_batch(name, tmp_path):
    model = build(name).train()
    path = export_onnx(model, tmp_path / f"{name}.onnx", image_size=SIZE)
    # The model passed in is untouched: still training, its layers on their own backend.
    assert model.training
    assert all(layer.backend == "auto" for layer in model.modules() if hasattr(layer, "backend"))
    graph = onnx.load(str(path)).graph
    # The DCSD op became standard ONNX ops: no node of a custom domain is left.
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    if name == "resnet50_dcsd":
        assert sum(node.op_type == "Slice" for node in graph.node) >= 16 * 9
    (images_input,) = graph.input
    assert images_input.name == "images"
    assert images_input.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # neither is the example's batch of 2
        images = torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(batch))
        (embedding,) = session.run(["embedding"], {"images": images.numpy()})
        assert embedding.shape == (batch, 2048)
        np.testing.assert_allclose(embedding, embed(model, images), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # torch.export of the reference op's 16 x 9 slices: a few minutes on CPU
def test_exported_program_runs_with_pytorch_alone(tmp_path):
    model = build("resnet50_dcsd")
    path = save_exported_program(model, tmp_path / "model.pt2", image_size=SIZE)
    images = torch.randn(3, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch\n"
        f"program = torch.export.load({str(path)!r}).module()\n"
        f"images = torch.load({str(tmp_path / 'images.pt')!r})\n"
        "with torch.no_grad():\n"
        "    out = program(images)\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
        "assert not any(name.split('.')[0] == 'dcsd' for name in sys.modules), 'dcsd imported'\n"
    )
    # A fresh interpreter, outside the repository: nothing of dcsd can be imported by accident.
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    np.testing.assert_allclose(out.numpy(), embed(model, images), rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_refused(tmp_path):
    model = dcsd.resnet50_reid(num_classes=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export_onnx("resnet50_dcsd", tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        save_exported_program(None, tmp_path / "x.pt2")
    with pytest.raises(ValueError, match="opset must be an int >= 18"):
        export_onnx(model, tmp_path / "x.onnx", opset=17)
    for size in ((64,), (64, 0), (64.0, 32)):
        with pytest.raises(ValueError, match="image_size must be"):
            save_exported_program(model, tmp_path / "x.pt2", image_size=size)
    assert not list(tmp_path.iterdir())
