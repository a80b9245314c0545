"""Triton kernels of :func:`dcsd.kernels.mean_and_pointwise_conv`: its forward and its input
gradient.

Forward: one read of x gives both results. A program owns (sample, block of input positions) and
loops over channel blocks: each [channels, positions] tile of x is summed over its positions
(the mean's partial sums, one per position block, finished by a fixed-order ``torch.sum``) and
multiplied by the weight's [outputs, channels] tile (``tl.dot``, the outputs padded to 16), which
accumulates the convolution at the block's positions; at stride s only the positions whose row
and column are multiples of s are stored.

Backward: the op reads one input for its per-channel mean over positions and a 1x1 convolution
(stride s, no padding), and passes it through to its other uses. Autograd would write each input
gradient out in full and add them; this kernel writes their sum once:

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
# The forward's tiles: tl.dot needs 16 or more along every dimension.
FORWARD_BLOCK_C = 32
FORWARD_BLOCK_P = 64
_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


@triton.jit
def _mean_pointwise_forward_kernel(
    x_ptr,
    weight_ptr,
    bias_ptr,
    projected_ptr,
    sum_part_ptr,
    channels,
    out_channels,
    width,
    positions,
    width_out,
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    weight_stride_t,
    weight_stride_c,
    projected_stride_n,
    projected_stride_t,
    projected_stride_h,
    projected_stride_w,
    STRIDE: tl.constexpr,
    OUT_BLOCK: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    position_block = tl.program_id(0)
    sample = tl.program_id(1).to(tl.int64)
    offs_p = position_block * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_t = tl.arange(0, OUT_BLOCK)
    mask_p = offs_p < positions
    mask_t = offs_t < out_channels
    row = offs_p // width
    col = offs_p % width
    x_offsets = (row * x_stride_h + col * x_stride_w)[None, :]
    x_ptr += sample * x_stride_n
    # (N, position blocks, C) float32 partial sums, contiguous.
    sum_part_ptr += (sample * tl.num_programs(0) + position_block) * channels
    acc = tl.zeros([OUT_BLOCK, BLOCK_P], dtype=ACC_DTYPE)
    for start in range(0, channels, BLOCK_C):
        offs_c = start + tl.arange(0, BLOCK_C)
        mask_c = offs_c < channels
        tile = tl.load(
            x_ptr + offs_c[:, None] * x_stride_c + x_offsets,
            mask=mask_c[:, None] & mask_p[None, :],
            other=0.0,
        )
        tl.store(sum_part_ptr + offs_c, tl.sum(tile.to(ACC_DTYPE), axis=1), mask=mask_c)
        weight = tl.load(
            weight_ptr + offs_t[:, None] * weight_stride_t + offs_c[None, :] * weight_stride_c,
            mask=mask_t[:, None] & mask_c[None, :],
            other=0.0,
        )
        # In float32 (IEEE, no TF32): 16 multiply-adds per element of x do not bind a
        # memory-bound kernel, and the products are then exact for 16-bit inputs.
        acc = tl.dot(weight.to(ACC_DTYPE), tile.to(ACC_DTYPE), acc, input_precision="ieee")
    bias = tl.load(bias_ptr + offs_t, mask=mask_t, other=0.0).to(ACC_DTYPE)
    acc += bias[:, None]
    on_grid = mask_p & (row % STRIDE == 0) & (col % STRIDE == 0)
    out_offsets = (row // STRIDE) * projected_stride_h + (col // STRIDE) * projected_stride_w
    tl.store(
        projected_ptr
        + sample * projected_stride_n
        + offs_t[:, None] * projected_stride_t
        + out_offsets[None, :],
        acc.to(projected_ptr.dtype.element_ty),
        mask=mask_t[:, None] & on_grid[None, :],
    )


def forward_launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int,
    projected: torch.Tensor,
    sum_part: torch.Tensor,
) -> Launch:
    """The forward kernel's launch writing ``projected`` and the mean's partial sums
    ``sum_part`` (N, position blocks, C) float32 (tensors may live on the meta device)."""
    batch, channels, height, width = x.shape
    positions = height * width
    args = (
        x,
        weight,
        bias,
        projected,
        sum_part,
        channels,
        weight.shape[0],
        width,
        positions,
        projected.shape[3],
        *x.stride(),
        *weight.stride(),
        *projected.stride(),
    )
    constants = {
        "STRIDE": stride,
        "OUT_BLOCK": max(16, triton.next_power_of_2(weight.shape[0])),
        "ACC_DTYPE": _TL_DTYPES[accumulation_dtype(x.dtype)],
        "BLOCK_C": FORWARD_BLOCK_C,
        "BLOCK_P": FORWARD_BLOCK_P,
        "num_warps": NUM_WARPS,
    }
    grid = (triton.cdiv(positions, FORWARD_BLOCK_P), batch, 1)
    moved = sum(t.numel() * t.element_size() for t in (x, weight, bias, projected, sum_part))
    return Launch(
        "mean_pointwise_forward",
        _mean_pointwise_forward_kernel,
        grid,
        args,
        constants,
        1,
        moved,
        False,
    )


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (N, C), projected (N, T, Ho, Wo)) in x's dtype; projected in x's memory format.
    ``weight`` (T, C) and ``bias`` (T,) in x's dtype."""
    batch, channels, height, width = x.shape
    shape = (batch, weight.shape[0], (height - 1) // stride + 1, (width - 1) // stride + 1)
    projected = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))
    blocks = triton.cdiv(height * width, FORWARD_BLOCK_P)
    wide = accumulation_dtype(x.dtype)
    sum_part = torch.empty(batch, blocks, channels, dtype=wide, device=x.device)
    launch = forward_launch(x, weight, bias, stride, projected, sum_part)
    guard = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with guard:
        _mean_pointwise_forward_kernel[launch.grid](*launch.args, **launch.constants)
    mean = sum_part.sum(dim=1) / (height * width)
    return mean.to(x.dtype), projected


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
