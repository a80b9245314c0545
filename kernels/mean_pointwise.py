"""The mean and a 1x1 convolution of one input, with one input gradient for both and for the
input's other uses.

A dynamic layer reads its input three times: the per-channel mean (a channel branch's global
average pooling), a 1x1 convolution (a spatial branch) and the main op. Computed apart, the
backward writes three input gradients in full and autograd adds them in two passes.
:func:`mean_and_pointwise_conv` returns the mean, the convolution and the input passed through
(a view, for the main op), from one autograd node whose backward
``dcsd::mean_and_pointwise_conv_backward`` writes the input gradient once: the mean's and the
convolution's gradients plus the one that came back through the passed-through input (the
Triton kernel on CUDA tensors, plain PyTorch ops on CPU tensors; ``backend="triton"`` runs the
kernel on CPU tensors too, under ``TRITON_INTERPRET=1``). The forward
``dcsd::mean_and_pointwise_conv`` reads the input once for both results on CUDA tensors (a
Triton kernel) and is PyTorch's mean and convolution on CPU tensors. Fake implementations make
both custom ops traceable by ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from ._validation import check_int
from .op import _CPU_RUNS_TRITON, Backend, _check_backend_fits, _cpu_runs_triton
from .shapes import accumulation_dtype, memory_format


def _triton_module() -> ModuleType:
    try:
        return importlib.import_module(".triton_mean_pointwise", __package__)
    except ImportError as error:
        raise RuntimeError(
            f"backend='triton' needs the triton package (Linux); use backend='reference': {error}"
        ) from error


def mean_and_pointwise_conv_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of x over H, W: (N, C); the 1x1 convolution of x: (N, T, Ho, Wo)) in plain ops."""
    projected = F.conv2d(x, weight[:, :, None, None], bias, stride=stride)
    return x.mean(dim=(2, 3)), projected


def mean_and_pointwise_conv_backward_reference(
    grad_mean: torch.Tensor,
    grad_projected: torch.Tensor,
    grad_through: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) of :func:`mean_and_pointwise_conv`, accumulated in at least float32
    and returned in the dtypes of x, weight and weight; ``grad_through`` (the gradient of the
    passed-through x, or ``None``) is added to dx."""
    wide = accumulation_dtype(x.dtype)
    batch, channels, height, width = x.shape
    grad_wide = grad_projected.to(wide)
    # One pass for the mean's gradient and the pass-through, then the convolution's in place.
    grad_x = (grad_mean.to(wide) / (height * width))[:, :, None, None].expand(x.shape)
    grad_x = grad_x.clone() if grad_through is None else grad_through.to(wide) + grad_x
    grad_x[:, :, ::stride, ::stride] += torch.einsum("nthw,tc->nchw", grad_wide, weight.to(wide))
    strided = x[:, :, ::stride, ::stride].to(wide)
    grad_weight = torch.einsum("nthw,nchw->tc", grad_wide, strided)
    grad_bias = grad_wide.sum(dim=(0, 2, 3))
    return (
        grad_x.to(x.dtype).contiguous(memory_format=memory_format(x)),
        grad_weight.to(weight.dtype),
        grad_bias.to(weight.dtype),
    )


def _projected_shape(x: torch.Tensor, weight: torch.Tensor, stride: int) -> tuple[int, ...]:
    batch, _, height, width = x.shape
    return batch, weight.shape[0], (height - 1) // stride + 1, (width - 1) // stride + 1


@torch.library.custom_op("dcsd::mean_and_pointwise_conv", mutates_args=(), device_types="cpu")
def _forward_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU kernel: PyTorch's mean and convolution, or the Triton kernel under
    ``_cpu_runs_triton``."""
    if _CPU_RUNS_TRITON.get():
        return _triton_module().forward(x, weight, bias, stride)
    # In x's dtype, as the fake says, whatever autocast state the caller runs under.
    with torch.autocast(x.device.type, enabled=False):
        mean, projected = mean_and_pointwise_conv_reference(x, weight, bias, stride)
    return mean, projected.contiguous(memory_format=memory_format(x))


@_forward_op.register_kernel("cuda")
def _forward_cuda(x, weight, bias, stride):
    if x.dtype == torch.float64:  # the Triton kernels take 16- and 32-bit floats
        return mean_and_pointwise_conv_reference(x, weight, bias, stride)
    return _triton_module().forward(x, weight, bias, stride)


@_forward_op.register_fake
def _forward_fake(x, weight, bias, stride):
    shape = _projected_shape(x, weight, stride)
    return (
        x.new_empty(x.shape[:2]),
        torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x)),
    )


@torch.library.custom_op(
    "dcsd::mean_and_pointwise_conv_backward", mutates_args=(), device_types="cpu"
)
def _backward_op(
    grad_mean: torch.Tensor,
    grad_projected: torch.Tensor,
    grad_through: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU kernel: plain ops, or the Triton kernel's dx under ``_cpu_runs_triton``."""
    args = (grad_mean, grad_projected, grad_through, x, weight, stride)
    grads = mean_and_pointwise_conv_backward_reference(*args)
    if _CPU_RUNS_TRITON.get():
        return _triton_module().grad_input(*args), grads[1], grads[2]
    return grads


@_backward_op.register_kernel("cuda")
def _backward_cuda(grad_mean, grad_projected, grad_through, x, weight, stride):
    grad_x = _triton_module().grad_input(grad_mean, grad_projected, grad_through, x, weight, stride)
    # dweight and dbias are (T, C) and (T,) reductions: torch's matmul and sum.
    strided = x[:, :, ::stride, ::stride]
    grad_weight = torch.einsum("nthw,nchw->tc", grad_projected, strided.to(grad_projected.dtype))
    grad_bias = grad_projected.sum(dim=(0, 2, 3), dtype=accumulation_dtype(weight.dtype))
    return grad_x, grad_weight.to(weight.dtype), grad_bias.to(weight.dtype)


@_backward_op.register_fake
def _backward_fake(grad_mean, grad_projected, grad_through, x, weight, stride):
    return (
        torch.empty_like(x, memory_format=memory_format(x)),
        torch.empty_like(weight),
        weight.new_empty(weight.shape[0]),
    )


class _MeanAndPointwise(torch.autograd.Function):
    """The autograd node: its outputs are the mean, the convolution and x passed through (a
    view), so the gradients of all three reach one backward, which writes dx once."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, cpu_runs_triton):
        if cpu_runs_triton:
            with _cpu_runs_triton(True):
                mean, projected = _forward_op(x, weight, bias, stride)
        else:
            mean, projected = _forward_op(x, weight, bias, stride)
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        ctx.cpu_runs_triton = cpu_runs_triton
        return mean, projected, x.view_as(x)

    @staticmethod
    def backward(ctx, grad_mean, grad_projected, grad_through):
        x, weight = ctx.saved_tensors
        if grad_mean is None:
            grad_mean = x.new_zeros(x.shape[:2])
        if grad_projected is None:
            grad_projected = x.new_zeros(_projected_shape(x, weight, ctx.stride))
        args = (grad_mean, grad_projected, grad_through, x, weight, ctx.stride)
        if ctx.cpu_runs_triton:
            with _cpu_runs_triton(True):
                return (*_backward_op(*args), None, None)
        return (*_backward_op(*args), None, None)


def _pointwise_flops(channels: int, projected_shape) -> int:
    batch, out_channels, height_out, width_out = projected_shape
    return 2 * batch * out_channels * channels * height_out * width_out


@register_flop_formula(torch.ops.dcsd.mean_and_pointwise_conv)
def _forward_flop_formula(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return _pointwise_flops(x_shape[1], out_shape[1])


@register_flop_formula(torch.ops.dcsd.mean_and_pointwise_conv_backward)
def _backward_flop_formula(
    grad_mean_shape, grad_projected_shape, grad_through_shape, x_shape, *args, **kwargs
) -> int:
    # dx and dweight each take one multiply-add per product of the forward.
    return 2 * _pointwise_flops(x_shape[1], grad_projected_shape)


def mean_and_pointwise_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int = 1,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-channel mean of ``x`` and its 1x1 convolution, with one input gradient for both
    and for x's other uses.

    Equal to ``(x.mean(dim=(2, 3)), F.conv2d(x, weight[:, :, None, None], bias, stride), x)``;
    differentiable in ``x``, ``weight`` and ``bias``. The third result is x passed through (a
    view): feed it, not x, to whatever else reads x, and the gradient that comes back through it
    is added in the same pass that writes x's gradient.

    Args:
        x: (N, C, H, W).
        weight: (T, C) the convolution's weight (cast to x's dtype, as autocast would).
        bias: (T,) its bias.
        stride: the convolution's stride (no padding).
        backend: ``"auto"`` (the custom ops: the Triton kernels on CUDA tensors, PyTorch's
            ops on CPU tensors), ``"triton"`` (the kernels on CPU tensors too, under
            ``TRITON_INTERPRET=1``) or ``"reference"`` (plain PyTorch ops, autograd through
            them).

    Returns:
        (mean (N, C), projected (N, T, Ho, Wo), x) in x's dtype, Ho = (H - 1) // stride + 1.

    Raises:
        TypeError / ValueError: wrong types, ranks or sizes, or a backend that cannot run here.
    """
    for name, tensor in (("x", x), ("weight", weight), ("bias", bias)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if x.dim() != 4 or weight.dim() != 2 or bias.dim() != 1:
        raise ValueError(
            f"expected x (N, C, H, W), weight (T, C) and bias (T,), got shapes "
            f"{tuple(x.shape)}, {tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    if weight.shape[1] != x.shape[1] or bias.shape[0] != weight.shape[0]:
        raise ValueError(
            f"weight {tuple(weight.shape)} must be (T, C={x.shape[1]}) and bias "
            f"{tuple(bias.shape)} (T,)"
        )
    check_int("stride", stride, 1)
    stride = int(stride)
    _check_backend_fits(backend, x)
    weight, bias = weight.to(x.dtype), bias.to(x.dtype)
    if backend == "reference" or (backend == "auto" and x.device.type not in ("cpu", "cuda")):
        return (*mean_and_pointwise_conv_reference(x, weight, bias, stride), x)
    cpu_runs_triton = backend == "triton" and x.device.type == "cpu"
    return _MeanAndPointwise.apply(x, weight, bias, stride, cpu_runs_triton)
