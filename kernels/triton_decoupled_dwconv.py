"""Triton kernels of the decoupled dynamic depthwise convolution: forward and all three gradients.

    out[n,c,h,w] = sum_{i,j} x[n,c,h*s+i*d-p, w*s+j*d-p] * spatial[n,i*K+j,h,w] * channel[n,c,i*K+j]

(zero outside the image). Every kernel works on 2-D tiles [BLOCK_C channels, BLOCK_P flattened
positions] of one sample, so a spatial-filter load is reused by BLOCK_C channels and a
channel-filter load by BLOCK_P positions; the K*K taps are unrolled (``tl.static_range``) with
kernel size, stride, padding and dilation as compile-time constants. Products accumulate in
float32 (float64 for float64 inputs). No kernel uses atomics, so results are deterministic:

- forward: one program per (sample, channel block, output-position block).
- dx: a gather rather than a scatter. Input row ``y`` receives tap ``i`` from output row ``h``
  where ``h * s = y + p - i * d``, so each program owns a block of input positions and visits, per
  tap, the one output position (if any) that reads it.
- dspatial and dchannel: one kernel, since both reduce the same products
  ``grad_out * x_tap``. A program owns (sample, output-position block, channel group): it loops
  over its channel group, reducing over channels for dspatial and over its positions for
  dchannel. The partial sums (one per channel group, one per position block) go to small float32
  workspaces that ``torch.sum`` finishes, in a fixed order.

The functions trust their arguments' shapes and dtypes: the public
:func:`dcsd.kernels.decoupled_dwconv2d` validates them before it calls these.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from .shapes import accumulation_dtype

# dspatial/dchannel programs own a whole channel group; when samples x position blocks alone give
# fewer programs than this, channels are split into groups so the grid still covers the GPU's
# streaming multiprocessors (132 on an H100) several times over.
_FILTER_GRAD_MIN_PROGRAMS = 1024
_INT32_MAX = 2**31 - 1
# CUDA caps grid dimensions 1 and 2 (samples, channel blocks); positions go on the larger dim 0.
_MAX_GRID_DIM = 65535
# Tiles of 16 channels x 64 positions over 8 warps leave 4 elements per thread, so all K*K
# unrolled loads stay in flight without register spills (ptxas for sm_90: about 100 registers at
# K=3, 140 at K=5); 32 x 64 tiles over 4 warps spill.
_BLOCK_C = 16
_BLOCK_P = 64
_NUM_WARPS = 8


@triton.jit
def _forward_kernel(
    x_ptr,
    spatial_ptr,
    channel_ptr,
    out_ptr,
    channels,
    height,
    width,
    height_out,
    width_out,
    KERNEL_SIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PADDING: tl.constexpr,
    DILATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    taps: tl.constexpr = KERNEL_SIZE * KERNEL_SIZE
    # Offsets inside one sample fit in int32 (checked by the wrapper); the sample offset may not.
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    sample = tl.program_id(2).to(tl.int64)
    pixels = height * width
    positions = height_out * width_out
    mask_c = offs_c < channels
    mask_p = offs_p < positions
    out_row = offs_p // width_out
    out_col = offs_p % width_out

    x_ptr += sample * channels * pixels
    spatial_ptr += sample * taps * positions
    channel_ptr += sample * channels * taps
    out_ptr += sample * channels * positions

    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC_DTYPE)
    for tap in tl.static_range(taps):
        in_row = out_row * STRIDE + (tap // KERNEL_SIZE) * DILATION - PADDING
        in_col = out_col * STRIDE + (tap % KERNEL_SIZE) * DILATION - PADDING
        inside = mask_p & (in_row >= 0) & (in_row < height) & (in_col >= 0) & (in_col < width)
        x_tap = tl.load(
            x_ptr + offs_c[:, None] * pixels + (in_row * width + in_col)[None, :],
            mask=mask_c[:, None] & inside[None, :],
            other=0.0,
        ).to(ACC_DTYPE)
        spatial_tap = tl.load(spatial_ptr + tap * positions + offs_p, mask=mask_p, other=0.0)
        channel_tap = tl.load(channel_ptr + offs_c * taps + tap, mask=mask_c, other=0.0)
        weight = channel_tap.to(ACC_DTYPE)[:, None] * spatial_tap.to(ACC_DTYPE)[None, :]
        acc += x_tap * weight
    tl.store(
        out_ptr + offs_c[:, None] * positions + offs_p[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=mask_c[:, None] & mask_p[None, :],
    )


@triton.jit
def _grad_input_kernel(
    grad_out_ptr,
    spatial_ptr,
    channel_ptr,
    grad_x_ptr,
    channels,
    height,
    width,
    height_out,
    width_out,
    KERNEL_SIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PADDING: tl.constexpr,
    DILATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    taps: tl.constexpr = KERNEL_SIZE * KERNEL_SIZE
    offs_q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    sample = tl.program_id(2).to(tl.int64)
    pixels = height * width
    positions = height_out * width_out
    mask_c = offs_c < channels
    mask_q = offs_q < pixels
    in_row = offs_q // width
    in_col = offs_q % width

    grad_out_ptr += sample * channels * positions
    spatial_ptr += sample * taps * positions
    channel_ptr += sample * channels * taps
    grad_x_ptr += sample * channels * pixels

    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC_DTYPE)
    for tap in tl.static_range(taps):
        # Output row h reads input row h*s + i*d - p through tap i: invert that for h.
        row_times_stride = in_row + PADDING - (tap // KERNEL_SIZE) * DILATION
        col_times_stride = in_col + PADDING - (tap % KERNEL_SIZE) * DILATION
        out_row = row_times_stride // STRIDE
        out_col = col_times_stride // STRIDE
        hit = mask_q & (row_times_stride >= 0) & (col_times_stride >= 0)
        hit = hit & (out_row < height_out) & (out_col < width_out)
        if STRIDE > 1:
            hit = hit & (row_times_stride % STRIDE == 0) & (col_times_stride % STRIDE == 0)
        out_pos = out_row * width_out + out_col
        grad_tap = tl.load(
            grad_out_ptr + offs_c[:, None] * positions + out_pos[None, :],
            mask=mask_c[:, None] & hit[None, :],
            other=0.0,
        ).to(ACC_DTYPE)
        spatial_tap = tl.load(spatial_ptr + tap * positions + out_pos, mask=hit, other=0.0)
        channel_tap = tl.load(channel_ptr + offs_c * taps + tap, mask=mask_c, other=0.0)
        weight = channel_tap.to(ACC_DTYPE)[:, None] * spatial_tap.to(ACC_DTYPE)[None, :]
        acc += grad_tap * weight
    tl.store(
        grad_x_ptr + offs_c[:, None] * pixels + offs_q[None, :],
        acc.to(grad_x_ptr.dtype.element_ty),
        mask=mask_c[:, None] & mask_q[None, :],
    )


@triton.jit
def _grad_filters_kernel(
    grad_out_ptr,
    x_ptr,
    spatial_ptr,
    channel_ptr,
    grad_spatial_part_ptr,
    grad_channel_part_ptr,
    channels,
    height,
    width,
    height_out,
    width_out,
    channels_per_group,
    KERNEL_SIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PADDING: tl.constexpr,
    DILATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    taps: tl.constexpr = KERNEL_SIZE * KERNEL_SIZE
    position_block = tl.program_id(0)
    group = tl.program_id(1)
    sample = tl.program_id(2).to(tl.int64)
    num_position_blocks = tl.num_programs(0)
    num_groups = tl.num_programs(1)
    offs_p = position_block * BLOCK_P + tl.arange(0, BLOCK_P)
    pixels = height * width
    positions = height_out * width_out
    mask_p = offs_p < positions
    out_row = offs_p // width_out
    out_col = offs_p % width_out
    group_start = group * channels_per_group
    group_end = tl.minimum(channels, group_start + channels_per_group)

    grad_out_ptr += sample * channels * positions
    x_ptr += sample * channels * pixels
    spatial_ptr += sample * taps * positions
    channel_ptr += sample * channels * taps
    # Workspaces: grad_spatial_part (N, groups, K*K, Ho*Wo), grad_channel_part (N, blocks, K*K, C).
    grad_spatial_part_ptr += (sample * num_groups + group) * taps * positions
    grad_channel_part_ptr += (sample * num_position_blocks + position_block) * taps * channels

    for tap in tl.static_range(taps):
        in_row = out_row * STRIDE + (tap // KERNEL_SIZE) * DILATION - PADDING
        in_col = out_col * STRIDE + (tap % KERNEL_SIZE) * DILATION - PADDING
        inside = mask_p & (in_row >= 0) & (in_row < height) & (in_col >= 0) & (in_col < width)
        x_offsets = in_row * width + in_col
        spatial_tap = tl.load(spatial_ptr + tap * positions + offs_p, mask=mask_p, other=0.0)
        spatial_tap = spatial_tap.to(ACC_DTYPE)
        grad_spatial = tl.zeros([BLOCK_P], dtype=ACC_DTYPE)
        for block_start in range(group_start, group_end, BLOCK_C):
            offs_c = block_start + tl.arange(0, BLOCK_C)
            mask_c = offs_c < group_end
            grad = tl.load(
                grad_out_ptr + offs_c[:, None] * positions + offs_p[None, :],
                mask=mask_c[:, None] & mask_p[None, :],
                other=0.0,
            ).to(ACC_DTYPE)
            x_tap = tl.load(
                x_ptr + offs_c[:, None] * pixels + x_offsets[None, :],
                mask=mask_c[:, None] & inside[None, :],
                other=0.0,
            ).to(ACC_DTYPE)
            channel_tap = tl.load(channel_ptr + offs_c * taps + tap, mask=mask_c, other=0.0)
            grad_x_tap = grad * x_tap
            grad_spatial += tl.sum(grad_x_tap * channel_tap.to(ACC_DTYPE)[:, None], axis=0)
            tl.store(
                grad_channel_part_ptr + tap * channels + offs_c,
                tl.sum(grad_x_tap * spatial_tap[None, :], axis=1),
                mask=mask_c,
            )
        tl.store(grad_spatial_part_ptr + tap * positions + offs_p, grad_spatial, mask=mask_p)


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def _check_launch(x: torch.Tensor, taps: int, positions: int, block_c: int, block_p: int) -> None:
    for name, value in (("block_c", block_c), ("block_p", block_p)):
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two, got {value}")
    batch, channels, height, width = x.shape
    largest_sample = max(channels * height * width, max(channels, taps) * positions)
    if largest_sample > _INT32_MAX:
        raise ValueError(
            "one sample of x, spatial or the output must hold fewer than 2**31 elements for the "
            f"Triton kernels' int32 offsets, got {largest_sample}"
        )
    channel_blocks = triton.cdiv(channels, block_c)
    if max(batch, channel_blocks) > _MAX_GRID_DIM:
        raise ValueError(
            f"the launch grid takes at most {_MAX_GRID_DIM} samples and channel blocks, got "
            f"N={batch} and {channel_blocks} blocks of block_c={block_c} channels"
        )


def _device_guard(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def forward(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    *,
    block_c: int = _BLOCK_C,
    block_p: int = _BLOCK_P,
    num_warps: int = _NUM_WARPS,
) -> torch.Tensor:
    """Forward pass.

    Args:
        x: (N, C, H, W) input.
        spatial: (N, K*K, Ho, Wo) per-position filters.
        channel: (N, C, K*K) per-channel filters.
        kernel_size, stride, padding, dilation: K, s, p, d of the definition above.
        block_c, block_p: tile size in channels and flattened output positions (powers of two).
        num_warps: warps per program.

    Returns:
        (N, C, Ho, Wo) contiguous, in the dtype of ``x``.
    """
    x, spatial, channel = x.contiguous(), spatial.contiguous(), channel.contiguous()
    batch, channels, height, width = x.shape
    height_out, width_out = spatial.shape[2], spatial.shape[3]
    positions = height_out * width_out
    _check_launch(x, spatial.shape[1], positions, block_c, block_p)
    out = torch.empty(batch, channels, height_out, width_out, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(positions, block_p), triton.cdiv(channels, block_c), batch)
    with _device_guard(x):
        _forward_kernel[grid](
            x,
            spatial,
            channel,
            out,
            channels,
            height,
            width,
            height_out,
            width_out,
            KERNEL_SIZE=kernel_size,
            STRIDE=stride,
            PADDING=padding,
            DILATION=dilation,
            ACC_DTYPE=_TL_DTYPES[accumulation_dtype(x.dtype)],
            BLOCK_C=block_c,
            BLOCK_P=block_p,
            num_warps=num_warps,
        )
    return out


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    *,
    block_c: int = _BLOCK_C,
    block_p: int = _BLOCK_P,
    channels_per_program: int | None = None,
    num_warps: int = _NUM_WARPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`forward` with respect to all three inputs.

    Args:
        grad_out: (N, C, Ho, Wo) gradient of the output.
        x, spatial, channel, kernel_size, stride, padding, dilation: as for :func:`forward`.
        block_c, block_p: tile size in channels and flattened positions (powers of two).
        channels_per_program: channels one dspatial/dchannel program reduces over (rounded up to
            a multiple of ``block_c``); ``None`` picks the largest group that still launches
            enough programs to fill a GPU.
        num_warps: warps per program.

    Returns:
        (dx, dspatial, dchannel): contiguous, with the shapes and dtypes of x, spatial, channel.
    """
    grad_out = grad_out.contiguous()
    x, spatial, channel = x.contiguous(), spatial.contiguous(), channel.contiguous()
    batch, channels, height, width = x.shape
    height_out, width_out = grad_out.shape[2], grad_out.shape[3]
    taps = kernel_size * kernel_size
    positions = height_out * width_out
    pixels = height * width
    _check_launch(x, taps, positions, block_c, block_p)
    workspace_dtype = accumulation_dtype(x.dtype)
    acc_dtype = _TL_DTYPES[workspace_dtype]
    constants = {
        "KERNEL_SIZE": kernel_size,
        "STRIDE": stride,
        "PADDING": padding,
        "DILATION": dilation,
        "ACC_DTYPE": acc_dtype,
        "BLOCK_C": block_c,
        "BLOCK_P": block_p,
        "num_warps": num_warps,
    }

    channel_blocks = triton.cdiv(channels, block_c)
    position_blocks = triton.cdiv(positions, block_p)
    if channels_per_program is None:
        wanted_groups = triton.cdiv(_FILTER_GRAD_MIN_PROGRAMS, batch * position_blocks)
        channels_per_program = triton.cdiv(channels, min(channel_blocks, wanted_groups))
    channels_per_group = triton.cdiv(channels_per_program, block_c) * block_c
    groups = triton.cdiv(channels, channels_per_group)

    grad_x = torch.empty(batch, channels, height, width, dtype=x.dtype, device=x.device)
    grad_spatial_part = torch.empty(
        batch, groups, taps, positions, dtype=workspace_dtype, device=x.device
    )
    grad_channel_part = torch.empty(
        batch, position_blocks, taps, channels, dtype=workspace_dtype, device=x.device
    )
    shape_args = (channels, height, width, height_out, width_out)
    with _device_guard(x):
        _grad_input_kernel[(triton.cdiv(pixels, block_p), channel_blocks, batch)](
            grad_out, spatial, channel, grad_x, *shape_args, **constants
        )
        _grad_filters_kernel[(position_blocks, groups, batch)](
            grad_out,
            x,
            spatial,
            channel,
            grad_spatial_part,
            grad_channel_part,
            *shape_args,
            channels_per_group,
            **constants,
        )
    grad_spatial = grad_spatial_part.sum(dim=1).view(spatial.shape).to(spatial.dtype)
    grad_channel = grad_channel_part.sum(dim=1).transpose(1, 2).to(channel.dtype).contiguous()
    return grad_x, grad_spatial, grad_channel
