"""Triton kernel of the input gradient of :func:`dcsd.kernels.mean_and_pointwise_conv`.

The op reads one input for its per-channel mean over positions and a 1x1 convolution (stride s,
no padding), and passes it through to its other uses. Autograd would write each input gradient
out in full and add them; this kernel writes their sum once:

    dx[n,c,y,x] = grad_through[n,c,y,x] + grad_mean[n,c] / (H*W)
                  + sum_t weight[t,c] * grad_projected[n,t,y/s,x/s]

where the last term is present only where y and x are multiples of s (and the first only when
the passed-through input was used). A program owns (sample,
channel block, position block); the T output channels of the convolution are unrolled
(``tl.static_range``), each reading one row of ``grad_projected`` shared by the block's channels
and one column of ``weight`` shared by its positions. Products accumulate in float32 (float64
for float64 inputs); no atomics.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from .shapes import accumulation_dtype, memory_format
from .triton_decoupled_dwconv import Launch

# Memory-bound: a wide position block keeps each row of grad_projected one vector load.
BLOCK_C = 16
BLOCK_P = 128
NUM_WARPS = 4
_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


@triton.jit
def _mean_pointwise_grad_input_kernel(
    grad_through_ptr,
    grad_mean_ptr,
    grad_projected_ptr,
    weight_ptr,
    grad_x_ptr,
    channels,
    width,
    positions,
    inverse_positions,
    through_stride_n,
    through_stride_c,
    through_stride_h,
    through_stride_w,
    grad_mean_stride_n,
    grad_mean_stride_c,
    projected_stride_n,
    projected_stride_t,
    projected_stride_h,
    projected_stride_w,
    weight_stride_t,
    weight_stride_c,
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    OUT_CHANNELS: tl.constexpr,
    STRIDE: tl.constexpr,
    HAS_THROUGH: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    sample = tl.program_id(2).to(tl.int64)
    mask_c = offs_c < channels
    mask_p = offs_p < positions
    row = offs_p // width
    col = offs_p % width
    on_grid = mask_p & (row % STRIDE == 0) & (col % STRIDE == 0)
    projected_offsets = (row // STRIDE) * projected_stride_h + (col // STRIDE) * projected_stride_w
    grad_projected_ptr += sample * projected_stride_n

    grad_mean = tl.load(
        grad_mean_ptr + sample * grad_mean_stride_n + offs_c * grad_mean_stride_c,
        mask=mask_c,
        other=0.0,
    ).to(ACC_DTYPE)
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC_DTYPE) + (grad_mean * inverse_positions)[:, None]
    for out_channel in tl.static_range(OUT_CHANNELS):
        weight = tl.load(
            weight_ptr + out_channel * weight_stride_t + offs_c * weight_stride_c,
            mask=mask_c,
            other=0.0,
        ).to(ACC_DTYPE)
        grad = tl.load(
            grad_projected_ptr + out_channel * projected_stride_t + projected_offsets,
            mask=on_grid,
            other=0.0,
        ).to(ACC_DTYPE)
        acc += weight[:, None] * grad[None, :]
    mask = mask_c[:, None] & mask_p[None, :]
    if HAS_THROUGH:
        through_offsets = (row * through_stride_h + col * through_stride_w)[None, :]
        through_offsets += offs_c[:, None] * through_stride_c
        through = tl.load(
            grad_through_ptr + sample * through_stride_n + through_offsets, mask=mask, other=0.0
        )
        acc += through.to(ACC_DTYPE)
    x_offsets = row * x_stride_h + col * x_stride_w
    tl.store(
        grad_x_ptr + sample * x_stride_n + offs_c[:, None] * x_stride_c + x_offsets[None, :],
        acc.to(grad_x_ptr.dtype.element_ty),
        mask=mask,
    )


def grad_input_launch(
    grad_mean: torch.Tensor,
    grad_projected: torch.Tensor,
    grad_through: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    grad_x: torch.Tensor,
) -> Launch:
    """The kernel's launch writing ``grad_x`` (shared with the offline compile; tensors may live
    on the meta device)."""
    batch, channels, height, width = x.shape
    positions = height * width
    # Without a pass-through gradient the kernel never reads its pointer: grad_x stands in.
    through = grad_x if grad_through is None else grad_through
    args = (
        through,
        grad_mean,
        grad_projected,
        weight,
        grad_x,
        channels,
        width,
        positions,
        1.0 / positions,
        *through.stride(),
        *grad_mean.stride(),
        *grad_projected.stride(),
        *weight.stride(),
        *grad_x.stride(),
    )
    constants = {
        "OUT_CHANNELS": weight.shape[0],
        "STRIDE": stride,
        "HAS_THROUGH": grad_through is not None,
        "ACC_DTYPE": _TL_DTYPES[accumulation_dtype(x.dtype)],
        "BLOCK_C": BLOCK_C,
        "BLOCK_P": BLOCK_P,
        "num_warps": NUM_WARPS,
    }
    grid = (triton.cdiv(positions, BLOCK_P), triton.cdiv(channels, BLOCK_C), batch)
    tensors = (grad_mean, grad_projected, weight, grad_x, grad_through)
    moved = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return Launch(
        "mean_pointwise_grad_input",
        _mean_pointwise_grad_input_kernel,
        grid,
        args,
        constants,
        1,
        moved,
        True,
    )


def grad_input(
    grad_mean: torch.Tensor,
    grad_projected: torch.Tensor,
    grad_through: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
) -> torch.Tensor:
    """dx of the mean, the 1x1 convolution and the pass-through together, in x's dtype and
    memory format.

    Args:
        grad_mean: (N, C) gradient of the mean.
        grad_projected: (N, T, Ho, Wo) gradient of the convolution's output.
        grad_through: (N, C, H, W) gradient of the passed-through x, any strides, or ``None``.
        x: (N, C, H, W) the input (its shape, dtype and layout only).
        weight: (T, C) the convolution's weight.
        stride: the convolution's stride.
    """
    grad_x = torch.empty_like(x, memory_format=memory_format(x))
    launch = grad_input_launch(grad_mean, grad_projected, grad_through, x, weight, stride, grad_x)
    guard = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with guard:
        _mean_pointwise_grad_input_kernel[launch.grid](*launch.args, **launch.constants)
    return grad_x
