"""Triton kernels of the decoupled dynamic depthwise convolution: forward and all three gradients.

    out[n,c,h,w] = sum_{i,j} x[n,c,h*s+i*d-p, w*s+j*d-p] * spatial[n,i*K+j,h,w] * channel[n,c,i*K+j]

(zero outside the image). Every kernel works on 2-D tiles [BLOCK_C channels, BLOCK_P flattened
positions] of one sample, so a spatial-filter load is reused by BLOCK_C channels and a
channel-filter load by BLOCK_P positions; the K*K taps are unrolled (``tl.static_range``) with
kernel size, stride, padding and dilation as compile-time constants. Products accumulate in
float32 (float64 for float64 inputs). No kernel uses atomics, so results are deterministic:

- forward: one program per (sample, channel block, output-position block).
- dx: a gather rather than a scatter. Input row ``y`` receives tap ``i`` from output row ``h``
  where ``h * s = y + p - i * d``. A program owns a block of cells of s x s input positions and
  handles each stride parity (``y mod s``, ``x mod s``) of its cells in turn: for one parity a tap
  reaches all of its positions or none, so only the reaching taps are compiled (at stride 2, 1, 2
  or 4 of the 9), each reading output positions at a constant offset in cells.
- dspatial and dchannel: one kernel, since both reduce the same products
  ``grad_out * x_tap``. A program owns (sample, output-position block, channel group) and loops
  over its channel group. Its tiles are [BLOCK_P positions, BLOCK_C channels] with one channel per
  lane, so dchannel's sum over positions stays mostly within a thread; dspatial's sum over
  channels is accumulated elementwise over the loop and crosses lanes once per tap.
  With one channel group (one position block) the kernel writes the gradient itself; else float32
  partial sums (one per group, one per position block) that ``torch.sum`` finishes in a fixed
  order.

All three kernels address dense NCHW planes at stride 1 with the width as a compile-time constant
(``DENSE_WIDTH``): positions are runs, so grad_out loads vectorise, and each tap is an immediate
offset from the positions (with a runtime width the same addressing modelled slower on the 8-wide
layers; bench/RESULTS.md).

Every tensor is addressed through its own strides, so NCHW and channels_last (NHWC) inputs, and
the filter tensors as the generators produce them, are read in place; outputs and input gradients
are written in the memory format of the tensor they belong to (see ``memory_format``).

The tile shape and warp count are a :class:`TileConfig`. Each kernel is wrapped in
``triton.autotune`` over ``active_configs(kernel)``, keyed on (C, Ho*Wo, stride, x's channel
stride, dtype): its default (the first of :data:`KERNEL_CONFIGS`) alone unless ``DCSD_AUTOTUNE=1``
is set before import (never under the interpreter), then every config listed for it. The
tuner times its configs on the first call of each key, so with ``DCSD_AUTOTUNE=1`` run one
warm-up step before capturing a CUDA graph; a capture that would tune is refused with an error.
Otherwise the launchers are capture-safe: no host synchronisation, allocations through torch.
:func:`launch_plan` lists a call's launches for the offline compile and performance model.

The functions trust their arguments' shapes and dtypes: the public
:func:`dcsd.kernels.decoupled_dwconv2d` validates them before it calls these.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .shapes import accumulation_dtype, memory_format


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration: [block_c, block_p] tiles (powers of two) run by num_warps warps."""

    block_c: int
    block_p: int
    num_warps: int

    @property
    def max_registers(self) -> int:
        """The register budget per thread (ptx ``.maxnreg``) that still fits two programs on an
        SM (64K registers). Without an explicit budget ptxas 12.9 (triton 3.8's) picks 48 registers
        for the dspatial/dchannel kernel on channels_last inputs for sm_90, and spills."""
        return min(255, 65536 // (2 * 32 * self.num_warps))

    def __str__(self) -> str:
        return f"{self.block_c}x{self.block_p}w{self.num_warps}"


# 16 channels x 64 positions over 8 warps: 4 elements per thread, so all K*K unrolled loads stay
# in flight without register spills (ptxas for sm_80 and sm_90: see bench/bench_compile.py).
DEFAULT_CONFIG = TileConfig(16, 64, 8)
# What the tuner may pick for the forward and dx kernels. Each one compiles for sm_80 and sm_90
# without spills for every dtype and layout at ResNet50-DCSD's stride-1 and stride-2 shapes
# (tests/kernels/test_kernels_compile.py with DCSD_COMPILE_MATRIX=full). Wide channel tiles suit
# channels_last, where channels are contiguous; long position tiles suit NCHW.
# 16x128 and 32x64 tiles over 8 warps (8 elements per thread within 128 registers) spill in the
# dx kernel on both archs, so they are not offered.
TUNING_CONFIGS = (DEFAULT_CONFIG, TileConfig(8, 128, 4), TileConfig(64, 16, 4))
# The dspatial/dchannel kernel's tiles are [positions, channels] with one channel per lane (see
# _grad_filters_kernel): 32 channels x 32 positions over 4 warps, 8 positions per thread (16
# spill at stride 2 on sm_90).
FILTER_GRAD_CONFIG = TileConfig(32, 32, 4)
KERNEL_CONFIGS = {
    "forward": TUNING_CONFIGS,
    "grad_input": TUNING_CONFIGS,
    "grad_filters": (FILTER_GRAD_CONFIG, TileConfig(32, 16, 2), TileConfig(32, 8, 1)),
}
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_AUTOTUNE = os.environ.get("DCSD_AUTOTUNE") == "1" and not _INTERPRET

# dspatial/dchannel programs own a whole channel group; when samples x position blocks alone give
# fewer programs than this, channels are split into groups so the grid still covers the GPU's
# streaming multiprocessors (132 on an H100) several times over.
_FILTER_GRAD_MIN_PROGRAMS = 1024
_INT32_MAX = 2**31 - 1
# CUDA caps grid dimensions 1 and 2 (channel blocks or groups, samples); positions go on dim 0.
_MAX_GRID_DIM = 65535


def active_configs(kernel: str = "forward") -> tuple[TileConfig, ...]:
    """The configs the autotuner chooses from for ``kernel`` (a key of :data:`KERNEL_CONFIGS`)
    in this process (fixed at import)."""
    return KERNEL_CONFIGS[kernel] if _AUTOTUNE else KERNEL_CONFIGS[kernel][:1]


def _autotune(kernel: triton.JITFunction, name: str) -> triton.runtime.Autotuner:
    configs = [
        triton.Config(
            {"BLOCK_C": c.block_c, "BLOCK_P": c.block_p},
            num_warps=c.num_warps,
            maxnreg=c.max_registers,
        )
        for c in active_configs(name)
    ]
    # The autotuner appends the pointers' dtypes to the key; x's channel stride tells NCHW
    # (H*W) from channels_last (1).
    return triton.autotune(configs, key=["channels", "positions", "STRIDE", "x_stride_c"])(kernel)


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
    positions,
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    spatial_stride_n,
    spatial_stride_t,
    spatial_stride_h,
    spatial_stride_w,
    channel_stride_n,
    channel_stride_c,
    channel_stride_t,
    out_stride_n,
    out_stride_c,
    out_stride_h,
    out_stride_w,
    KERNEL_SIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PADDING: tl.constexpr,
    DILATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    DENSE_WIDTH: tl.constexpr,
):
    taps: tl.constexpr = KERNEL_SIZE * KERNEL_SIZE
    # Offsets inside one sample fit in int32 (checked by the wrapper); the sample offset may not.
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    sample = tl.program_id(2).to(tl.int64)
    mask_c = offs_c < channels
    mask_p = offs_p < positions
    x_ptr += sample * x_stride_n
    spatial_ptr += sample * spatial_stride_n
    channel_ptr += sample * channel_stride_n
    out_ptr += sample * out_stride_n
    # DENSE_WIDTH > 0: x, spatial and out store their planes row after row, all DENSE_WIDTH wide
    # (stride 1, "same" padding), so positions are runs and each tap of x sits at a compile-time
    # shift from them, which the loads take as an immediate offset.
    if DENSE_WIDTH > 0:
        out_row = offs_p // DENSE_WIDTH
        out_col = offs_p % DENSE_WIDTH
        spatial_offsets = offs_p
        out_offsets = offs_p
        x_base = x_ptr + offs_c[:, None] * x_stride_c + offs_p[None, :]
    else:
        out_row = offs_p // width_out
        out_col = offs_p % width_out
        spatial_offsets = out_row * spatial_stride_h + out_col * spatial_stride_w
        out_offsets = out_row * out_stride_h + out_col * out_stride_w
        x_base = x_ptr + offs_c[:, None] * x_stride_c

    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC_DTYPE)
    for tap in tl.static_range(taps):
        row_shift = (tap // KERNEL_SIZE) * DILATION - PADDING
        col_shift = (tap % KERNEL_SIZE) * DILATION - PADDING
        in_row = out_row * STRIDE + row_shift
        in_col = out_col * STRIDE + col_shift
        if DENSE_WIDTH > 0:
            inside = mask_p & (in_row >= 0) & (in_row < height)
            inside = inside & (in_col >= 0) & (in_col < DENSE_WIDTH)
            x_pointers = x_base + (row_shift * DENSE_WIDTH + col_shift)
        else:
            inside = mask_p & (in_row >= 0) & (in_row < height) & (in_col >= 0) & (in_col < width)
            x_pointers = x_base + (in_row * x_stride_h + in_col * x_stride_w)[None, :]
        x_tap = tl.load(x_pointers, mask=mask_c[:, None] & inside[None, :], other=0.0).to(ACC_DTYPE)
        spatial_tap = tl.load(
            spatial_ptr + tap * spatial_stride_t + spatial_offsets, mask=mask_p, other=0.0
        )
        channel_tap = tl.load(
            channel_ptr + offs_c * channel_stride_c + tap * channel_stride_t, mask=mask_c, other=0.0
        )
        weight = channel_tap.to(ACC_DTYPE)[:, None] * spatial_tap.to(ACC_DTYPE)[None, :]
        acc += x_tap * weight
    tl.store(
        out_ptr + offs_c[:, None] * out_stride_c + out_offsets[None, :],
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
    positions,
    grad_stride_n,
    grad_stride_c,
    grad_stride_h,
    grad_stride_w,
    spatial_stride_n,
    spatial_stride_t,
    spatial_stride_h,
    spatial_stride_w,
    channel_stride_n,
    channel_stride_c,
    channel_stride_t,
    # grad_x is allocated in x's layout, so these are x's strides too.
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    KERNEL_SIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PADDING: tl.constexpr,
    DILATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    DENSE_WIDTH: tl.constexpr,
):
    taps: tl.constexpr = KERNEL_SIZE * KERNEL_SIZE
    # Positions are counted on the coarse grid of STRIDE x STRIDE cells; each program handles
    # BLOCK_P cells, one input position of each parity (row and column modulo STRIDE) per cell.
    coarse_width = tl.cdiv(width, STRIDE)
    offs_q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    sample = tl.program_id(2).to(tl.int64)
    mask_c = offs_c < channels
    mask_q = offs_q < tl.cdiv(height, STRIDE) * coarse_width
    if DENSE_WIDTH > 0:
        cell_row = offs_q // DENSE_WIDTH
        cell_col = offs_q % DENSE_WIDTH
    else:
        cell_row = offs_q // coarse_width
        cell_col = offs_q % coarse_width

    grad_out_ptr += sample * grad_stride_n
    spatial_ptr += sample * spatial_stride_n
    channel_ptr += sample * channel_stride_n
    grad_x_ptr += sample * x_stride_n

    for parity in tl.static_range(STRIDE * STRIDE):
        row_parity = parity // STRIDE
        col_parity = parity % STRIDE
        in_row = cell_row * STRIDE + row_parity
        in_col = cell_col * STRIDE + col_parity
        if DENSE_WIDTH > 0:
            inside = mask_q  # one parity: every cell is an input position
        else:
            inside = mask_q & (in_row < height) & (in_col < width)
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC_DTYPE)
        for tap in tl.static_range(taps):
            # Output row h reads input row h*s + i*d - p through tap i. For input rows of one
            # parity, h*s = y + p - i*d is a multiple of s for all of them or for none: only the
            # taps that reach this parity are compiled, each at a constant offset in cells.
            row_shift = row_parity + PADDING - (tap // KERNEL_SIZE) * DILATION
            col_shift = col_parity + PADDING - (tap % KERNEL_SIZE) * DILATION
            if (row_shift % STRIDE == 0) and (col_shift % STRIDE == 0):
                out_row = cell_row + row_shift // STRIDE
                out_col = cell_col + col_shift // STRIDE
                hit = inside & (out_row >= 0) & (out_row < height_out)
                if DENSE_WIDTH > 0:
                    # Dense planes at stride 1 (as in the forward): the tap of grad_out and
                    # spatial sits at a compile-time shift from the input position.
                    hit = hit & (out_col >= 0) & (out_col < DENSE_WIDTH)
                    grad_offsets = offs_q + (row_shift * DENSE_WIDTH + col_shift)
                    spatial_offsets = grad_offsets
                else:
                    hit = hit & (out_col >= 0) & (out_col < width_out)
                    grad_offsets = out_row * grad_stride_h + out_col * grad_stride_w
                    spatial_offsets = out_row * spatial_stride_h + out_col * spatial_stride_w
                grad_tap = tl.load(
                    grad_out_ptr + offs_c[:, None] * grad_stride_c + grad_offsets[None, :],
                    mask=mask_c[:, None] & hit[None, :],
                    other=0.0,
                ).to(ACC_DTYPE)
                spatial_tap = tl.load(
                    spatial_ptr + tap * spatial_stride_t + spatial_offsets, mask=hit, other=0.0
                )
                channel_tap = tl.load(
                    channel_ptr + offs_c * channel_stride_c + tap * channel_stride_t,
                    mask=mask_c,
                    other=0.0,
                )
                weight = channel_tap.to(ACC_DTYPE)[:, None] * spatial_tap.to(ACC_DTYPE)[None, :]
                acc += grad_tap * weight
        if DENSE_WIDTH > 0:
            x_offsets = offs_q
        else:
            x_offsets = in_row * x_stride_h + in_col * x_stride_w
        tl.store(
            grad_x_ptr + offs_c[:, None] * x_stride_c + x_offsets[None, :],
            acc.to(grad_x_ptr.dtype.element_ty),
            mask=mask_c[:, None] & inside[None, :],
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
    positions,
    grad_stride_n,
    grad_stride_c,
    grad_stride_h,
    grad_stride_w,
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    spatial_stride_n,
    spatial_stride_t,
    spatial_stride_h,
    spatial_stride_w,
    channel_stride_n,
    channel_stride_c,
    channel_stride_t,
    # Workspaces, allocated for the finest tiling any config may use: grad_spatial_part
    # (N, groups, K*K, Ho*Wo) and grad_channel_part (N, position blocks, C, K*K), contiguous.
    spatial_part_stride_n,
    channel_part_stride_n,
    KERNEL_SIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PADDING: tl.constexpr,
    DILATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    DENSE_WIDTH: tl.constexpr,
):
    taps: tl.constexpr = KERNEL_SIZE * KERNEL_SIZE
    position_block = tl.program_id(0)
    group = tl.program_id(1)
    sample = tl.program_id(2).to(tl.int64)
    # The grid sets the number of groups (it depends on the tile): the smallest multiple of
    # BLOCK_C channels per group that covers every channel with that many groups.
    channels_per_group = tl.cdiv(tl.cdiv(channels, tl.num_programs(1)), BLOCK_C) * BLOCK_C
    # Tiles are [BLOCK_P positions, BLOCK_C channels]: with channels the faster axis, a thread
    # holds positions of one channel, so dchannel's sum over positions stays in the thread.
    offs_p = position_block * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < positions
    if DENSE_WIDTH > 0:
        out_row = offs_p // DENSE_WIDTH
        out_col = offs_p % DENSE_WIDTH
    else:
        out_row = offs_p // width_out
        out_col = offs_p % width_out
    group_start = group * channels_per_group
    group_size = tl.minimum(channels, group_start + channels_per_group) - group_start
    # 2-D from the start ([1, BLOCK_C] and [BLOCK_P, 1]), so every vector has the tile's layout.
    lanes = tl.arange(0, BLOCK_C)[None, :]
    mask_p = mask_p[:, None]

    grad_out_ptr += sample * grad_stride_n + group_start * grad_stride_c
    x_ptr += sample * x_stride_n + group_start * x_stride_c
    spatial_ptr += sample * spatial_stride_n
    channel_ptr += sample * channel_stride_n + group_start * channel_stride_c
    grad_spatial_part_ptr += sample * spatial_part_stride_n + group * taps * positions
    grad_channel_part_ptr += (
        sample * channel_part_stride_n + position_block * channels * taps + group_start * taps
    )
    if DENSE_WIDTH > 0:
        grad_offsets = offs_p[:, None] + lanes * grad_stride_c
        spatial_offsets = offs_p[:, None]
    else:
        grad_offsets = (out_row * grad_stride_h + out_col * grad_stride_w)[:, None]
        grad_offsets += lanes * grad_stride_c
        spatial_offsets = (out_row * spatial_stride_h + out_col * spatial_stride_w)[:, None]

    for tap in tl.static_range(taps):
        in_row = out_row * STRIDE + (tap // KERNEL_SIZE) * DILATION - PADDING
        in_col = out_col * STRIDE + (tap % KERNEL_SIZE) * DILATION - PADDING
        if DENSE_WIDTH > 0:
            inside = (in_row >= 0) & (in_row < height) & (in_col >= 0) & (in_col < DENSE_WIDTH)
        else:
            inside = (in_row >= 0) & (in_row < height) & (in_col >= 0) & (in_col < width)
        inside = mask_p & inside[:, None]
        if DENSE_WIDTH > 0:
            shift = ((tap // KERNEL_SIZE) * DILATION - PADDING) * DENSE_WIDTH
            shift += (tap % KERNEL_SIZE) * DILATION - PADDING
            x_offsets = (offs_p + shift)[:, None] + lanes * x_stride_c
        else:
            x_offsets = (in_row * x_stride_h + in_col * x_stride_w)[:, None]
            x_offsets += lanes * x_stride_c
        spatial_tap = tl.load(
            spatial_ptr + tap * spatial_stride_t + spatial_offsets, mask=mask_p, other=0.0
        ).to(ACC_DTYPE)
        # dspatial sums over channels: the products accumulate elementwise over the channel loop
        # and are reduced across channels once per tap.
        weighted = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC_DTYPE)
        for start in range(0, group_size, BLOCK_C):
            mask_c = lanes < group_size - start
            grad = tl.load(
                grad_out_ptr + start * grad_stride_c + grad_offsets,
                mask=mask_p & mask_c,
                other=0.0,
            )
            x_tap = tl.load(x_ptr + start * x_stride_c + x_offsets, mask=inside & mask_c, other=0.0)
            channel_tap = tl.load(
                channel_ptr + (start + lanes) * channel_stride_c + tap * channel_stride_t,
                mask=mask_c,
                other=0.0,
            )
            grad_x_tap = grad.to(ACC_DTYPE) * x_tap.to(ACC_DTYPE)
            weighted += grad_x_tap * channel_tap.to(ACC_DTYPE)
            tl.store(
                grad_channel_part_ptr + (start + lanes) * taps + tap,
                tl.sum(grad_x_tap * spatial_tap, axis=0, keep_dims=True),
                mask=mask_c,
            )
        tl.store(
            grad_spatial_part_ptr + tap * positions + offs_p[:, None],
            tl.sum(weighted, axis=1, keep_dims=True),
            mask=mask_p,
        )


_forward_tuned = _autotune(_forward_kernel, "forward")
_grad_input_tuned = _autotune(_grad_input_kernel, "grad_input")
_grad_filters_tuned = _autotune(_grad_filters_kernel, "grad_filters")


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def _accumulation_dtype(dtype: torch.dtype) -> tl.dtype:
    return _TL_DTYPES[accumulation_dtype(dtype)]


def _check_config(config: TileConfig | None) -> None:
    if config is None:
        return
    for name in ("block_c", "block_p", "num_warps"):
        value = getattr(config, name)
        if value < 1 or value & (value - 1):
            raise ValueError(f"config.{name} must be a power of two, got {value}")


def _check_launch(
    tensors: dict[str, torch.Tensor], positions: int, configs: tuple[TileConfig, ...]
) -> None:
    """Per-sample offsets must fit the kernels' int32 arithmetic; the grid, CUDA's limits."""
    batch, channels = tensors["x"].shape[:2]
    extents = {
        name: 1 + sum((t.size(dim) - 1) * t.stride(dim) for dim in range(1, t.dim()))
        for name, t in tensors.items()
    }
    extents["the output"] = channels * positions
    for name, extent in extents.items():
        if extent > _INT32_MAX:
            raise ValueError(
                f"one sample of {name} spans {extent} elements, more than the Triton kernels' "
                "int32 offsets address (2**31 - 1)"
            )
    block_c = min(config.block_c for config in configs)
    channel_blocks = triton.cdiv(channels, block_c)
    if max(batch, channel_blocks) > _MAX_GRID_DIM:
        raise ValueError(
            f"the launch grid takes at most {_MAX_GRID_DIM} samples and channel blocks, got "
            f"N={batch} and {channel_blocks} blocks of {block_c} channels"
        )


def _device_guard(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _capturing(tensor: torch.Tensor) -> bool:
    """Whether the current CUDA stream is being captured into a CUDA graph."""
    return tensor.is_cuda and torch.cuda.is_current_stream_capturing()


def _check_tuned_before_capture(
    tuned: triton.runtime.Autotuner, args: tuple, constants: dict
) -> None:
    """Refuse to autotune inside CUDA graph capture: the tuner times every config, which a
    capture cannot hold. The key is the tuner's own: its ``key`` arguments, then the dtype of
    every argument that has one.

    Raises:
        RuntimeError: the tuner has more than one config and has not chosen one for this key.
    """
    if len(tuned.configs) < 2:
        return
    named = dict(zip(tuned.arg_names, args, strict=False)) | {
        name: value for name, value in constants.items() if name in tuned.arg_names
    }
    key = [named[name] for name in tuned.keys if name in named]
    key += [str(value.dtype) for value in named.values() if hasattr(value, "dtype")]
    if tuple(key) not in tuned.cache:
        raise RuntimeError(
            f"the Triton autotuner would time {tuned.fn.__name__}'s configs inside CUDA graph "
            f"capture (DCSD_AUTOTUNE=1, shape key {tuple(key)}): run one warm-up step on inputs "
            "of this shape before capturing"
        )


def _launch(
    tuned: triton.runtime.Autotuner,
    config: TileConfig | None,
    grid,
    args: tuple,
    constants: dict,
) -> TileConfig:
    """Run ``tuned`` (``config=None``) or its kernel with ``config``; return the config that ran."""
    if config is None:
        if _capturing(args[0]):
            _check_tuned_before_capture(tuned, args, constants)
        tuned[grid](*args, **constants)
        best = tuned.best_config
        return TileConfig(best.kwargs["BLOCK_C"], best.kwargs["BLOCK_P"], best.num_warps)
    tuned.fn[grid](
        *args,
        **constants,
        BLOCK_C=config.block_c,
        BLOCK_P=config.block_p,
        num_warps=config.num_warps,
        maxnreg=config.max_registers,
    )
    return config


def _constants(kernel_size: int, stride: int, padding: int, dilation: int, dtype) -> dict:
    return {
        "KERNEL_SIZE": kernel_size,
        "STRIDE": stride,
        "PADDING": padding,
        "DILATION": dilation,
        "ACC_DTYPE": _accumulation_dtype(dtype),
    }


def forward_launch_args(
    x: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor, out: torch.Tensor
) -> tuple:
    """The forward kernel's runtime arguments, in order (shared with the offline compile)."""
    channels, height, width = x.shape[1:]
    height_out, width_out = out.shape[2:]
    return (
        x,
        spatial,
        channel,
        out,
        channels,
        height,
        width,
        height_out,
        width_out,
        height_out * width_out,
        *x.stride(),
        *spatial.stride(),
        *channel.stride(),
        *out.stride(),
    )


def forward(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    *,
    config: TileConfig | None = None,
) -> torch.Tensor:
    """Forward pass; inputs in any strides.

    Args:
        x: (N, C, H, W) input.
        spatial: (N, K*K, Ho, Wo) per-position filters.
        channel: (N, C, K*K) per-channel filters.
        kernel_size, stride, padding, dilation: K, s, p, d of the definition above.
        config: the tile and warps to launch with; ``None`` lets the autotuner choose among
            ``active_configs()``.

    Returns:
        (N, C, Ho, Wo) in the dtype and memory format (NCHW or channels_last) of ``x``.
    """
    _check_config(config)
    batch, channels = x.shape[:2]
    height_out, width_out = spatial.shape[2:]
    positions = height_out * width_out
    candidates = active_configs() if config is None else (config,)
    _check_launch({"x": x, "spatial": spatial, "channel": channel}, positions, candidates)
    out = torch.empty(
        batch,
        channels,
        height_out,
        width_out,
        dtype=x.dtype,
        device=x.device,
        memory_format=memory_format(x),
    )

    def grid(meta):
        return (
            triton.cdiv(positions, meta["BLOCK_P"]),
            triton.cdiv(channels, meta["BLOCK_C"]),
            batch,
        )

    with _device_guard(x):
        _launch(
            _forward_tuned,
            config,
            grid,
            forward_launch_args(x, spatial, channel, out),
            {
                **_constants(kernel_size, stride, padding, dilation, x.dtype),
                "DENSE_WIDTH": _dense_width(stride, x, out, spatial),
            },
        )
    return out


def _cells(height: int, width: int, stride: int) -> int:
    """Cells of the dx kernel's coarse grid: one input position of each stride parity per cell."""
    return triton.cdiv(height, stride) * triton.cdiv(width, stride)


def _filter_grad_grid(
    batch: int,
    channels: int,
    positions: int,
    config: TileConfig,
    channels_per_program: int | None,
) -> tuple[int, int]:
    """(position blocks, channel groups) of the dspatial/dchannel launch with ``config``."""
    channel_blocks = triton.cdiv(channels, config.block_c)
    position_blocks = triton.cdiv(positions, config.block_p)
    if channels_per_program is None:
        wanted_groups = triton.cdiv(_FILTER_GRAD_MIN_PROGRAMS, batch * position_blocks)
        channels_per_program = triton.cdiv(channels, min(channel_blocks, wanted_groups))
    channels_per_group = triton.cdiv(channels_per_program, config.block_c) * config.block_c
    return position_blocks, triton.cdiv(channels, channels_per_group)


def backward_launch_args(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    grad_x: torch.Tensor,
    grad_spatial_part: torch.Tensor,
    grad_channel_part: torch.Tensor,
) -> tuple[tuple, tuple]:
    """The dx and dspatial/dchannel kernels' runtime arguments (shared with the offline compile)."""
    channels, height, width = x.shape[1:]
    height_out, width_out = grad_out.shape[2:]
    shape = (channels, height, width, height_out, width_out, height_out * width_out)
    grad_input_args = (
        grad_out,
        spatial,
        channel,
        grad_x,
        *shape,
        *grad_out.stride(),
        *spatial.stride(),
        *channel.stride(),
        *grad_x.stride(),
    )
    grad_filters_args = (
        grad_out,
        x,
        spatial,
        channel,
        grad_spatial_part,
        grad_channel_part,
        *shape,
        *grad_out.stride(),
        *x.stride(),
        *spatial.stride(),
        *channel.stride(),
        grad_spatial_part.stride(0),
        grad_channel_part.stride(0),
    )
    return grad_input_args, grad_filters_args


@dataclass(frozen=True)
class Launch:
    """One step of a call of the op as the launchers run it, for the offline compile and the
    performance model (``bench/bench_compile.py --model``): a Triton kernel, or with ``kernel``
    ``None`` a torch pass that finishes a gradient."""

    name: str
    kernel: triton.JITFunction | None
    grid: tuple[int, int, int]
    args: tuple
    constants: dict
    # How many times each runtime loop of the kernel runs per program (1: it has none).
    loop_trips: int
    # Every tensor argument read or written once (tap overlap and filter reuse served on chip);
    # for a torch pass, what it reads and writes.
    moved_bytes: int
    backward: bool


def _tensor_bytes(args: tuple) -> int:
    return sum(arg.numel() * arg.element_size() for arg in args if isinstance(arg, torch.Tensor))


def _dense_width(stride: int, x: torch.Tensor, *maps: torch.Tensor) -> int:
    """The kernels' ``DENSE_WIDTH``: x's width W where positions may be addressed as runs, else 0
    (strided addressing; one compiled variant per width). Runs need stride 1, x and every
    (N, *, Ho, Wo) map storing its planes densely, row after row (NCHW-contiguous planes), and an
    output of x's size: x's tap ``i, j`` is then output position + (i*d - p) * W + j*d - p. (At a
    larger stride padding can also keep x's size, but not that relation.)"""
    tensors = (x, *maps)
    dense = all(t.stride(3) == 1 and t.stride(2) == t.size(3) for t in tensors)
    same_size = all(t.shape[2:] == x.shape[2:] for t in maps)
    return x.size(3) if stride == 1 and dense and same_size else 0


def _filter_grad_buffers(
    x: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor, groups: int, blocks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the dspatial/dchannel kernel writes: (N, groups, K*K, Ho*Wo) and (N, position blocks,
    C, K*K), contiguous. With one group (one position block) that is the gradient itself, in its
    dtype; else float32 partial sums that :func:`_finish` adds up."""
    batch, channels = x.shape[:2]
    taps, positions = spatial.shape[1], spatial.shape[2] * spatial.shape[3]
    partial = accumulation_dtype(x.dtype)
    spatial_dtype = spatial.dtype if groups == 1 else partial
    channel_dtype = channel.dtype if blocks == 1 else partial
    return (
        torch.empty(batch, groups, taps, positions, dtype=spatial_dtype, device=x.device),
        torch.empty(batch, blocks, channels, taps, dtype=channel_dtype, device=x.device),
    )


def _finish(part: torch.Tensor, count: int, like: torch.Tensor) -> torch.Tensor:
    """The gradient shaped and laid out as ``like`` from the first ``count`` partial sums."""
    total = part[:, 0] if part.size(1) == 1 else part[:, :count].sum(dim=1)
    return total.view(like.shape).to(like.dtype, memory_format=memory_format(like))


def launch_plan(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    config: TileConfig | None = None,
) -> list[Launch]:
    """Every launch and finishing pass of one forward and backward, in order, with the arguments
    the launchers build (``grad_out`` and the results in x's memory format); ``config`` for every
    kernel, or ``None`` for each kernel's default (the first of :data:`KERNEL_CONFIGS`). Tensors
    may live on the meta device."""
    configs = {name: config or choices[0] for name, choices in KERNEL_CONFIGS.items()}
    batch, channels, height, width = x.shape
    height_out, width_out = spatial.shape[2:]
    positions = height_out * width_out
    like_x = {"dtype": x.dtype, "device": x.device, "memory_format": memory_format(x)}
    out = torch.empty(batch, channels, height_out, width_out, **like_x)
    grad_x = torch.empty(batch, channels, height, width, **like_x)
    filter_config = configs["grad_filters"]
    blocks, groups = _filter_grad_grid(batch, channels, positions, filter_config, None)
    grad_spatial_part, grad_channel_part = _filter_grad_buffers(x, spatial, channel, groups, blocks)
    forward_args = forward_launch_args(x, spatial, channel, out)
    grad_input_args, grad_filters_args = backward_launch_args(
        out, x, spatial, channel, grad_x, grad_spatial_part, grad_channel_part
    )
    base = _constants(kernel_size, stride, padding, dilation, x.dtype)

    def constants(name: str) -> dict:
        tile = configs[name]
        return {
            **base,
            "DENSE_WIDTH": _dense_width(stride, x, out, spatial),
            "BLOCK_C": tile.block_c,
            "BLOCK_P": tile.block_p,
            "num_warps": tile.num_warps,
            "maxnreg": tile.max_registers,
        }

    channels_per_group = triton.cdiv(triton.cdiv(channels, groups), filter_config.block_c)
    # torch.sum reads the partial sums and writes float32; a cast to a 16-bit dtype reads that
    # and writes the gradient. One group (position block): the kernel wrote the gradient.
    cast = 0 if x.dtype == accumulation_dtype(x.dtype) else 4 + x.element_size()
    finishes = []
    for name, count, size in (
        ("finish_spatial", groups, spatial.numel()),
        ("finish_channel", blocks, channel.numel()),
    ):
        if count > 1:
            moved = 4 * (count + 1) * size + cast * size
            finishes.append(Launch(name, None, (0, 0, 0), (), {}, 1, moved, True))
    return [
        Launch(
            "forward",
            _forward_kernel,
            (
                triton.cdiv(positions, configs["forward"].block_p),
                triton.cdiv(channels, configs["forward"].block_c),
                batch,
            ),
            forward_args,
            constants("forward"),
            1,
            _tensor_bytes(forward_args),
            False,
        ),
        Launch(
            "grad_input",
            _grad_input_kernel,
            (
                triton.cdiv(_cells(height, width, stride), configs["grad_input"].block_p),
                triton.cdiv(channels, configs["grad_input"].block_c),
                batch,
            ),
            grad_input_args,
            constants("grad_input"),
            1,
            _tensor_bytes(grad_input_args),
            True,
        ),
        Launch(
            "grad_filters",
            _grad_filters_kernel,
            (blocks, groups, batch),
            grad_filters_args,
            constants("grad_filters"),
            channels_per_group,
            _tensor_bytes(grad_filters_args),
            True,
        ),
        *finishes,
    ]


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
    config: TileConfig | None = None,
    channels_per_program: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`forward` with respect to all three inputs; inputs in any strides.

    Args:
        grad_out: (N, C, Ho, Wo) gradient of the output.
        x, spatial, channel, kernel_size, stride, padding, dilation: as for :func:`forward`.
        config: the tile and warps of both kernels; ``None`` lets the autotuner choose.
        channels_per_program: channels one dspatial/dchannel program reduces over (rounded up to
            a multiple of the tile's channels); ``None`` picks the largest group that still
            launches enough programs to fill a GPU.

    Returns:
        (dx, dspatial, dchannel) with the shapes and dtypes of x, spatial, channel; dx and
        dspatial in the memory format of x and spatial, dchannel contiguous.
    """
    _check_config(config)
    batch, channels, height, width = x.shape
    height_out, width_out = grad_out.shape[2:]
    positions = height_out * width_out
    input_candidates = active_configs("grad_input") if config is None else (config,)
    filter_candidates = active_configs("grad_filters") if config is None else (config,)
    tensors = {"x": x, "grad_out": grad_out, "spatial": spatial, "channel": channel}
    _check_launch(tensors, positions, input_candidates + filter_candidates)
    # The partial sums must hold the finest tiling the autotuner may pick; the finishing sums
    # read only the part the chosen config wrote.
    geometry = [
        _filter_grad_grid(batch, channels, positions, c, channels_per_program)
        for c in filter_candidates
    ]
    max_blocks = max(blocks for blocks, _ in geometry)
    max_groups = max(groups for _, groups in geometry)

    grad_x = torch.empty(
        batch,
        channels,
        height,
        width,
        dtype=x.dtype,
        device=x.device,
        memory_format=memory_format(x),
    )
    grad_spatial_part, grad_channel_part = _filter_grad_buffers(
        x, spatial, channel, max_groups, max_blocks
    )
    grad_input_args, grad_filters_args = backward_launch_args(
        grad_out, x, spatial, channel, grad_x, grad_spatial_part, grad_channel_part
    )
    constants = _constants(kernel_size, stride, padding, dilation, x.dtype)
    constants["DENSE_WIDTH"] = _dense_width(stride, x, grad_out, spatial)

    def grad_input_grid(meta):
        return (
            triton.cdiv(_cells(height, width, stride), meta["BLOCK_P"]),
            triton.cdiv(channels, meta["BLOCK_C"]),
            batch,
        )

    def grad_filters_grid(meta):
        tile = TileConfig(meta["BLOCK_C"], meta["BLOCK_P"], 1)
        return (*_filter_grad_grid(batch, channels, positions, tile, channels_per_program), batch)

    with _device_guard(x):
        _launch(_grad_input_tuned, config, grad_input_grid, grad_input_args, constants)
        used = _launch(_grad_filters_tuned, config, grad_filters_grid, grad_filters_args, constants)
    blocks, groups = _filter_grad_grid(batch, channels, positions, used, channels_per_program)
    grad_spatial = _finish(grad_spatial_part, groups, spatial)
    grad_channel = _finish(grad_channel_part, blocks, channel)
    return grad_x, grad_spatial, grad_channel
