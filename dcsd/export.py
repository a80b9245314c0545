"""Export the eval-mode feature extractor for deployment: an ONNX graph (through ``torch.export``,
the DCSD op translated to ONNX ops by onnxscript) or a saved ``torch.export`` program.

Both take the model's embedding (eval mode, after BNNeck) with a dynamic batch; the model passed
in is not modified.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .modules import set_op_backend

INPUT_NAME = "images"
OUTPUT_NAME = "embedding"


def _eval_copy(model: torch.nn.Module) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).cpu().float().eval()


def _check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    if (
        len(image_size) != 2
        or not all(type(side) is int for side in image_size)
        or min(image_size) < 1
    ):
        raise ValueError(f"image_size must be (H, W) with two ints >= 1, got {image_size!r}")
    return image_size


def _export_program(
    model: torch.nn.Module, image_size: tuple[int, int]
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` on a (2, 3, H, W) example, the batch dimension dynamic."""
    example = torch.randn(2, 3, *_check_image_size(image_size))
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _decoupled_dwconv2d_onnx() -> Callable[..., Any]:
    """The ONNX translation of ``dcsd::decoupled_dwconv2d``, written with onnxscript's ops as the
    reference computes it: the zero-padded input's K*K strided windows (Slice), each times its
    tap of the spatial and channel filters (Mul), summed (Add). Shapes follow the inputs, so
    the batch stays dynamic."""
    from onnxscript import opset18 as op

    def decoupled_dwconv2d(
        x: Any,
        spatial: Any,
        channel: Any,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
    ) -> Any:
        def ints(*values: int) -> Any:
            return op.Constant(value_ints=list(values))

        padded = op.Pad(x, ints(0, 0, padding, padding, 0, 0, padding, padding))
        # A window spans (Ho - 1) * stride + 1 rows and columns of the padded input.
        out_size = op.Shape(spatial, start=2, end=4)
        span = op.Add(op.Mul(op.Sub(out_size, ints(1, 1)), ints(stride, stride)), ints(1, 1))
        out = None
        for i in range(kernel_size):
            for j in range(kernel_size):
                tap = i * kernel_size + j
                starts = ints(i * dilation, j * dilation)
                window = op.Slice(
                    padded, starts, op.Add(starts, span), ints(2, 3), ints(stride, stride)
                )
                spatial_tap = op.Slice(spatial, ints(tap), ints(tap + 1), ints(1))  # (N, 1, Ho, Wo)
                channel_tap = op.Unsqueeze(
                    op.Slice(channel, ints(tap), ints(tap + 1), ints(2)), ints(3)
                )  # (N, C, 1, 1)
                term = op.Mul(window, op.Mul(spatial_tap, channel_tap))
                out = term if out is None else op.Add(out, term)
        return out

    return decoupled_dwconv2d


def _mean_and_pointwise_conv_onnx() -> Callable[..., Any]:
    """The ONNX translation of ``dcsd::mean_and_pointwise_conv``: ReduceMean over H, W and a
    1x1 Conv with the op's stride."""
    from onnxscript import opset18 as op

    def mean_and_pointwise_conv(x: Any, weight: Any, bias: Any, stride: int) -> Any:
        mean = op.ReduceMean(x, op.Constant(value_ints=[2, 3]), keepdims=0)
        kernel = op.Unsqueeze(weight, op.Constant(value_ints=[2, 3]))  # (T, C, 1, 1)
        return mean, op.Conv(x, kernel, bias, strides=[stride, stride])

    return mean_and_pointwise_conv


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (256, 128),
    opset: int = 18,
    optimize: bool = False,
) -> Path:
    """Write ``model``'s embedding (eval mode, after BNNeck) as an ONNX graph.

    The model is captured with ``torch.export`` (upstream's exporter, ``dynamo=True``), where the
    DCSD layers call the ``dcsd::decoupled_dwconv2d`` and ``dcsd::mean_and_pointwise_conv``
    custom ops (through their fake implementations); onnxscript translates them into standard
    ONNX ops (Pad, Slice, Mul, Add: the reference's sum of shifted windows; ReduceMean and
    Conv), so any ONNX runtime runs the graph, no custom op library needed. Needs the ``onnx``
    extra (onnx, onnxscript; onnxruntime to run it).

    Args:
        model: a dcsd ReID model (any module mapping (N, 3, H, W) to (N, D) in eval mode).
        path: the ``.onnx`` file to write.
        image_size: (H, W) of the graph's input; the batch dimension is dynamic.
        opset: the ONNX opset (18 or newer).
        optimize: run onnxscript's graph optimiser (constant folding and fusions) on the graph;
            off by default because it takes minutes for ResNet50-DCSD on a CPU and runtimes
            optimise the graph themselves when they load it.

    Returns:
        The written path. The graph's input is ``images`` (N, 3, H, W) float32, its output
        ``embedding`` (N, D).
    """
    exported = _eval_copy(model)
    if type(opset) is not int or opset < 18:
        raise ValueError(f"opset must be an int >= 18 (onnxscript's ops), got {opset!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        _export_program(exported, image_size),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=True,
        optimize=optimize,
        custom_translation_table={
            torch.ops.dcsd.decoupled_dwconv2d.default: _decoupled_dwconv2d_onnx(),
            torch.ops.dcsd.mean_and_pointwise_conv.default: _mean_and_pointwise_conv_onnx(),
        },
        verbose=False,
    )
    program.save(str(path))
    return path


def save_exported_program(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (256, 128),
) -> Path:
    """Save ``model``'s embedding (eval mode, after BNNeck) as a ``torch.export`` program
    (``.pt2``), which ``torch.export.load(path).module()`` runs with PyTorch alone: neither
    dcsd nor the model's Python code is needed.

    The DCSD layers are captured through the op's plain-PyTorch reference (strided slices,
    products and sums), so the program needs no custom op library; on a GPU it is slower than
    the Triton kernels dcsd runs.

    Args:
        model: a dcsd ReID model.
        path: the file to write (``.pt2`` by convention).
        image_size: (H, W) of the input; the batch dimension is dynamic.

    Returns:
        The written path.
    """
    exported = _eval_copy(model)
    set_op_backend(exported, "reference")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(_export_program(exported, image_size), str(path))
    return path
