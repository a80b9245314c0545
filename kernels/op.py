"""The public op: argument checks, backend choice and its torch.library registration.

``dcsd::decoupled_dwconv2d`` and ``dcsd::decoupled_dwconv2d_backward`` are custom ops with one
kernel per device: on CUDA tensors the Triton kernels, on CPU tensors the plain-PyTorch reference
(results in the input's memory format, as the Triton kernels write them), so the dispatcher, not
an argument, picks the implementation. Both have fake (meta) implementations, so
``torch.compile(fullgraph=True)`` traces through them, an autograd formula that calls the backward
op, and FLOP formulas for ``FlopCounterMode``.

``backend="triton"`` on CPU tensors (under ``TRITON_INTERPRET=1``, to test the kernels against
the reference) goes through the same ops and the same autograd formula: the public function sets
a private context flag around the forward op call, under which the CPU kernels run the Triton
launchers instead of the reference; the autograd context records the flag and the backward sets
it again around the backward op call. ``backend="reference"`` bypasses the custom ops and runs
plain PyTorch ops (autograd through them), for ONNX export and tests.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from numbers import Integral
from types import ModuleType
from typing import Literal

import torch
from torch.utils.flop_counter import register_flop_formula

from .reference import decoupled_dwconv2d_backward_reference, decoupled_dwconv2d_reference
from .shapes import check_arguments, memory_format, output_size

Backend = Literal["auto", "triton", "reference"]
BACKENDS = ("auto", "triton", "reference")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Devices the custom ops have kernels for (meta: the fake implementations). On any other device
# backend="auto" runs the reference's plain ops.
_OP_DEVICES = ("cpu", "cuda", "meta")

# Set only by backend="triton" on CPU tensors, around one op call: the CPU kernels then run the
# Triton launchers (under the interpreter) instead of the reference.
_CPU_RUNS_TRITON: ContextVar[bool] = ContextVar("dcsd_cpu_runs_triton", default=False)


@contextlib.contextmanager
def _cpu_runs_triton(enabled: bool) -> Iterator[None]:
    token = _CPU_RUNS_TRITON.set(enabled)
    try:
        yield
    finally:
        _CPU_RUNS_TRITON.reset(token)


def _triton_module() -> ModuleType:
    """Import the Triton kernels on first use, so the package imports without Triton."""
    try:
        return importlib.import_module(".triton_decoupled_dwconv", __package__)
    except ImportError as error:
        raise RuntimeError(
            "backend='triton' needs the triton package (Linux); use backend='reference' or "
            f"install triton: {error}"
        ) from error


@torch.library.custom_op("dcsd::decoupled_dwconv2d", mutates_args=(), device_types="cpu")
def _forward_op(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """The CPU kernel: the reference, or the Triton launcher under ``_cpu_runs_triton``."""
    options = (kernel_size, stride, padding, dilation)
    if _CPU_RUNS_TRITON.get():
        return _triton_module().forward(x, spatial, channel, *options)
    out = decoupled_dwconv2d_reference(x, spatial, channel, *options)
    return out.contiguous(memory_format=memory_format(x))


@_forward_op.register_kernel("cuda")
def _forward_cuda(x, spatial, channel, kernel_size, stride, padding, dilation):
    return _triton_module().forward(x, spatial, channel, kernel_size, stride, padding, dilation)


@_forward_op.register_fake
def _forward_fake(x, spatial, channel, kernel_size, stride, padding, dilation):
    height_out, width_out = output_size(
        x.shape[2], x.shape[3], kernel_size, stride, padding, dilation
    )
    shape = (x.shape[0], x.shape[1], height_out, width_out)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))


@torch.library.custom_op("dcsd::decoupled_dwconv2d_backward", mutates_args=(), device_types="cpu")
def _backward_op(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU kernel: the reference, or the Triton launcher under ``_cpu_runs_triton``."""
    args = (grad_out, x, spatial, channel, kernel_size, stride, padding, dilation)
    if _CPU_RUNS_TRITON.get():
        return _triton_module().backward(*args)
    grad_x, grad_spatial, grad_channel = decoupled_dwconv2d_backward_reference(*args)
    return (
        grad_x.contiguous(memory_format=memory_format(x)),
        grad_spatial.contiguous(memory_format=memory_format(spatial)),
        grad_channel.contiguous(),
    )


@_backward_op.register_kernel("cuda")
def _backward_cuda(grad_out, x, spatial, channel, kernel_size, stride, padding, dilation):
    return _triton_module().backward(
        grad_out, x, spatial, channel, kernel_size, stride, padding, dilation
    )


@_backward_op.register_fake
def _backward_fake(grad_out, x, spatial, channel, kernel_size, stride, padding, dilation):
    return (
        torch.empty_like(x, memory_format=memory_format(x)),
        torch.empty_like(spatial, memory_format=memory_format(spatial)),
        torch.empty_like(channel, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, spatial, channel, kernel_size, stride, padding, dilation = inputs
    ctx.save_for_backward(x, spatial, channel)
    ctx.options = (kernel_size, stride, padding, dilation)
    # The backward runs later, outside the public function's flag: record which CPU kernel the
    # forward ran, so the backward runs the same one.
    ctx.cpu_runs_triton = _CPU_RUNS_TRITON.get()


def _backward(ctx, grad_out):
    x, spatial, channel = ctx.saved_tensors
    with _cpu_runs_triton(ctx.cpu_runs_triton):
        grads = _backward_op(grad_out, x, spatial, channel, *ctx.options)
    return (*grads, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def _forward_flops(kernel_size: int, out_shape) -> int:
    batch, channels, height_out, width_out = out_shape
    # One multiply-add per tap and output element, counted as 2 FLOPs like FlopCounterMode's
    # convolutions (model zoos' "FLOPs" are these multiply-adds: the counter's total / 2).
    return 2 * kernel_size * kernel_size * batch * channels * height_out * width_out


@register_flop_formula(torch.ops.dcsd.decoupled_dwconv2d)
def _forward_flop_formula(
    x_shape, spatial_shape, channel_shape, kernel_size, *args, out_shape=None, **kwargs
) -> int:
    return _forward_flops(kernel_size, out_shape)


@register_flop_formula(torch.ops.dcsd.decoupled_dwconv2d_backward)
def _backward_flop_formula(
    grad_out_shape, x_shape, spatial_shape, channel_shape, kernel_size, *args, **kwargs
) -> int:
    # dx, dspatial and dchannel each take one multiply-add per tap and output element.
    return 3 * _forward_flops(kernel_size, grad_out_shape)


def check_backend(backend: object) -> str:
    """``backend``, after checking it names a backend of :data:`BACKENDS`.

    Raises:
        TypeError: ``backend`` is not a str.
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
    """
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be a str, one of {BACKENDS}, got {type(backend).__name__} {backend!r}"
        )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _check_backend_fits(backend: str, x: torch.Tensor) -> None:
    """``backend`` is a backend that can run on ``x``'s device and dtype."""
    check_backend(backend)
    if backend == "triton":
        if x.dtype not in _TRITON_DTYPES:
            raise TypeError(
                f"backend='triton' supports float16, bfloat16 and float32, got {x.dtype}; "
                "use backend='reference' for float64"
            )
        if x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "backend='triton' got CPU tensors: Triton runs on CPU only under "
                "TRITON_INTERPRET=1 (set before the first Triton call); use a CUDA device or "
                "backend='reference'"
            )


def decoupled_dwconv2d(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
    dilation: int = 1,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Decoupled dynamic depthwise convolution (DDF's "mul" combine).

    out[n,c,h,w] = sum_{i,j} x[n,c,h*s+i*d-p,w*s+j*d-p] * spatial[n,i*K+j,h,w] * channel[n,c,i*K+j]

    with zeros outside the image. Differentiable in ``x``, ``spatial`` and ``channel``.

    Args:
        x: (N, C, H, W) input; float16, bfloat16, float32 (or float64 except on ``"triton"``).
        spatial: (N, K*K, Ho, Wo) one K x K filter per output position, shared by all channels.
        channel: (N, C, K*K) one K x K filter per channel, shared by all positions.
        kernel_size: K, odd.
        stride: s >= 1.
        padding: p >= 0; ``None`` means ``dilation * (K - 1) // 2``.
        dilation: d >= 1.
        backend: ``"auto"`` calls the ``dcsd::decoupled_dwconv2d`` custom op, whose kernel the
            dispatcher picks by device: the Triton kernels on CUDA tensors, the reference on
            CPU tensors (other devices: the reference's plain ops). ``"triton"`` runs the Triton
            kernels through the same custom op on CUDA tensors, and on CPU tensors too (under
            ``TRITON_INTERPRET=1``) by setting a context flag that the CPU kernel reads; that
            ``ContextVar.set`` is a graph break for ``torch.compile`` (an error with
            ``fullgraph=True``), so test it eagerly. ``"reference"`` runs plain PyTorch ops
            (autograd through them, exportable to ONNX).

    Returns:
        (N, C, Ho, Wo) in the dtype of ``x``, channels_last if ``x`` is channels_last (and not
        also contiguous), else contiguous (``backend="reference"``, and ``"auto"`` off CPU and
        CUDA: as PyTorch's ops return it), with
        Ho = (H + 2p - d(K-1) - 1) // s + 1 (likewise Wo).

    Raises:
        TypeError: non-tensor inputs, unsupported or mixed dtypes, non-int options.
        ValueError: wrong ranks or shapes, even K, mixed devices, unknown backend.
    """
    if padding is None and isinstance(dilation, Integral) and isinstance(kernel_size, Integral):
        padding = dilation * (kernel_size - 1) // 2
    check_arguments(x, spatial, channel, kernel_size, stride, padding, dilation)
    # NumPy integers pass the checks; the custom op and Triton get plain ints.
    kernel_size, stride, padding, dilation = map(int, (kernel_size, stride, padding, dilation))
    _check_backend_fits(backend, x)
    options = (kernel_size, stride, padding, dilation)
    if backend == "reference" or (backend == "auto" and x.device.type not in _OP_DEVICES):
        return decoupled_dwconv2d_reference(x, spatial, channel, *options)
    if backend == "triton" and x.device.type == "cpu":
        with _cpu_runs_triton(True):
            return _forward_op(x, spatial, channel, *options)
    return _forward_op(x, spatial, channel, *options)
