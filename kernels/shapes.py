"""Shape arithmetic and argument checks shared by every backend of the op."""

from __future__ import annotations

import torch

from ._validation import check_int

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every backend accumulates a ``dtype`` input in: float64 stays, others float32."""
    return torch.promote_types(dtype, torch.float32)


def output_size(
    height: int, width: int, kernel_size: int, stride: int, padding: int, dilation: int
) -> tuple[int, int]:
    """(Ho, Wo) of a K x K window with the given stride, padding and dilation."""
    span = dilation * (kernel_size - 1) + 1
    return (
        (height + 2 * padding - span) // stride + 1,
        (width + 2 * padding - span) // stride + 1,
    )


def memory_format(tensor: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-D tensor stored as NHWC (and not also NCHW-contiguous),
    else ``torch.contiguous_format``: the layout in which the op returns results for it."""
    if (
        tensor.dim() == 4
        and not tensor.is_contiguous()
        and tensor.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def check_arguments(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
) -> tuple[int, int]:
    """Validate the op's arguments and return (Ho, Wo).

    Raises:
        TypeError: a tensor argument is not a tensor, an int argument is not an int, or the
            dtypes are not supported or not all the same.
        ValueError: wrong ranks, mismatched batch / channel / tap counts, even kernel size,
            spatial filter size not equal to the output size, or tensors on different devices.
    """
    for name, tensor in (("x", x), ("spatial", spatial), ("channel", channel)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    check_int("kernel_size", kernel_size, 1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    check_int("stride", stride, 1)
    check_int("padding", padding, 0)
    check_int("dilation", dilation, 1)

    expected_ranks = (("x", x, 4, "(N, C, H, W)"), ("spatial", spatial, 4, "(N, K*K, Ho, Wo)"))
    for name, tensor, rank, layout in (*expected_ranks, ("channel", channel, 3, "(N, C, K*K)")):
        if tensor.dim() != rank:
            raise ValueError(f"{name} must be {rank}-D {layout}, got shape {tuple(tensor.shape)}")

    devices = {t.device for t in (x, spatial, channel)}
    if len(devices) > 1:
        raise ValueError(
            "x, spatial and channel must be on one device, got "
            f"x: {x.device}, spatial: {spatial.device}, channel: {channel.device}"
        )
    for name, tensor in (("x", x), ("spatial", spatial), ("channel", channel)):
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{name} must be float16, bfloat16, float32 or float64, got {tensor.dtype}"
            )
    if not (x.dtype == spatial.dtype == channel.dtype):
        raise TypeError(
            "x, spatial and channel must share one dtype, got "
            f"x: {x.dtype}, spatial: {spatial.dtype}, channel: {channel.dtype}"
        )

    batch, channels, height, width = x.shape
    taps = kernel_size * kernel_size
    if spatial.shape[0] != batch or channel.shape[0] != batch:
        raise ValueError(
            f"batch sizes differ: x has N={batch}, spatial N={spatial.shape[0]}, "
            f"channel N={channel.shape[0]}"
        )
    if channel.shape[1] != channels:
        raise ValueError(
            f"channel must be (N, C, K*K) with C={channels} as in x, got shape "
            f"{tuple(channel.shape)}"
        )
    if spatial.shape[1] != taps:
        raise ValueError(
            f"spatial must have K*K={taps} filter taps in dim 1 for kernel_size={kernel_size}, "
            f"got shape {tuple(spatial.shape)}"
        )
    if channel.shape[2] != taps:
        raise ValueError(
            f"channel must have K*K={taps} filter taps in dim 2 for kernel_size={kernel_size}, "
            f"got shape {tuple(channel.shape)}"
        )
    height_out, width_out = output_size(height, width, kernel_size, stride, padding, dilation)
    if height_out < 1 or width_out < 1:
        raise ValueError(
            f"input of size {height}x{width} is too small for kernel_size={kernel_size}, "
            f"dilation={dilation}, padding={padding}: the output would be {height_out}x{width_out}"
        )
    if tuple(spatial.shape[2:]) != (height_out, width_out):
        raise ValueError(
            f"spatial must be (N, K*K, Ho, Wo) with Ho x Wo = {height_out}x{width_out} for this "
            f"input, stride, padding and dilation, got shape {tuple(spatial.shape)}"
        )
    return height_out, width_out
