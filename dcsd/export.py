"""Export the eval-mode feature extractor to ONNX."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch

from .modules import set_op_backend


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (256, 128),
    opset: int = 18,
) -> Path:
    """Write ``model``'s embedding (eval mode, after BNNeck) as an ONNX graph.

    The DCSD op is exported through its plain-PyTorch reference (sums of shifted slices), which
    ONNX expresses with Slice, Mul and Add; the model passed in is not modified.

    Args:
        model: a dcsd ReID model.
        path: the ``.onnx`` file to write.
        image_size: (H, W) of the example input; the batch dimension is dynamic.
        opset: the ONNX opset.

    Returns:
        The written path. The graph's input is ``images`` (N, 3, H, W), its output
        ``embedding`` (N, 2048).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    exported = copy.deepcopy(model).cpu().float().eval()
    set_op_backend(exported, "reference")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, *image_size)
    with warnings.catch_warnings():
        # The input checks compare static shapes; the tracer's warnings about them are moot.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        # The TorchScript exporter is deprecated upstream, but it exports the reference op's
        # strided slices with a dynamic batch as they are; see the README.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            exported,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["embedding"],
            dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path
