"""Benchmark the decoupled dynamic depthwise convolution on ResNet50-DCSD's 16 layer shapes.

Times the forward and forward+backward of these implementations:

- ``triton``: ``dcsd.kernels.decoupled_dwconv2d(..., backend="triton")``;
- ``reference``: ``decoupled_dwconv2d_reference`` (K*K shifted slices, autograd backward);
- ``unfold``: ``F.unfold`` to (N, C, K*K, L) times both filters, summed over taps: the usual
  way to write the op in PyTorch, which materialises K*K-times larger tensors;
- ``compile``: ``torch.compile`` of the reference;
- ``cudnn``: ``F.conv2d(groups=C)`` with one static K x K filter per channel (cuDNN on CUDA),
  forward and backward (dx, dweight): not the same op, but the practical floor of a depthwise
  convolution of the same shapes on that device.

The op is memory-bound, so each time is also shown as achieved bandwidth: the bytes that must move
(forward: read x, spatial, channel, write out; backward: read grad_out, x, spatial, channel, write
dx, dspatial, dchannel; for ``cudnn`` the static filter instead of spatial and channel) over the
time, and as a share of the device's copy bandwidth measured in the same run (a large
device-to-device copy, read + write). Beside them, "moved MB" is what the Triton implementation
reads and writes, kernel by kernel: every input of a kernel read once and every output written
once (tap overlap and filter reuse served on chip), plus the dspatial / dchannel workspaces and
the passes that finish them, for the tile config used (the default unless ``DCSD_AUTOTUNE=1``).

    python bench/bench_kernels.py                          # CUDA: batch 64, bf16 and fp32
    python bench/bench_kernels.py --out bench/RESULTS.md   # also append the tables there
    python bench/bench_kernels.py --device cpu             # reference/unfold/compile/cudnn, batch 2
    python bench/bench_kernels.py --channels-last          # x, spatial, grad_out as NHWC
    python bench/bench_kernels.py --kernel-times           # CUDA: profiler time of each kernel
    python bench/bench_kernels.py --count-bytes --baseline REV  # bytes moved, now and at REV
    TRITON_INTERPRET=1 python bench/bench_kernels.py --device cpu --tiny --impls triton unfold

CUDA times are medians of ``triton.testing.do_bench`` (L2 flushed between runs); CPU times are
medians of ``time.perf_counter`` over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
import triton
import triton.testing

from dcsd.kernels import (
    decoupled_dwconv2d,
    decoupled_dwconv2d_reference,
    mean_and_pointwise_conv,
    output_size,
    triton_decoupled_dwconv,
)
from dcsd.kernels.offline_compile import OpCall, plan

KERNEL_SIZE = 3
IMPLEMENTATIONS = ("triton", "reference", "unfold", "compile", "cudnn")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
# Forward outputs of every implementation must agree with the float64 reference this closely
# (relative to the largest magnitude) before their times are worth printing.
CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


@dataclass(frozen=True)
class Layer:
    """The 3x3 conv of one or more identical ResNet50 bottlenecks at input 256x128, last stride 1.

    ``height`` x ``width`` is the conv's input size; ``count`` how many bottlenecks share it.
    """

    name: str
    count: int
    channels: int
    height: int
    width: int
    stride: int


# The stem divides 256x128 by 4; layer2 and layer3 open with a stride-2 3x3 conv; layer4 keeps
# stride 1 (the ReID "last stride 1"), so it stays at 16x8.
LAYERS = (
    Layer("layer1.0-2", 3, 64, 64, 32, 1),
    Layer("layer2.0", 1, 128, 64, 32, 2),
    Layer("layer2.1-3", 3, 128, 32, 16, 1),
    Layer("layer3.0", 1, 256, 32, 16, 2),
    Layer("layer3.1-5", 5, 256, 16, 8, 1),
    Layer("layer4.0-2", 3, 512, 16, 8, 1),
)
assert sum(layer.count for layer in LAYERS) == 16


def tiny(layer: Layer) -> Layer:
    """A shape small enough for the Triton interpreter: channels / 32, sides / 4."""
    return Layer(
        layer.name,
        layer.count,
        max(1, layer.channels // 32),
        layer.height // 4,
        layer.width // 4,
        layer.stride,
    )


def unfold_dwconv2d(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """The op through ``F.unfold``: x to (N, C, K*K, L), times both filters, summed over taps."""
    batch, channels = x.shape[:2]
    height_out, width_out = spatial.shape[2:]
    taps = kernel_size * kernel_size
    columns = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    columns = columns.view(batch, channels, taps, height_out * width_out)
    weighted = columns * spatial.view(batch, 1, taps, -1) * channel.view(batch, channels, taps, 1)
    return weighted.sum(dim=2).view(batch, channels, height_out, width_out)


def triton_dwconv2d(x, spatial, channel, kernel_size, stride, padding, dilation) -> torch.Tensor:
    return decoupled_dwconv2d(
        x, spatial, channel, kernel_size, stride, padding, dilation, backend="triton"
    )


def static_dwconv2d(x, weight, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """The cudnn row: a static depthwise convolution, weight (C, 1, K, K)."""
    return F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=x.shape[1])


def implementation(name: str) -> Callable[..., torch.Tensor]:
    if name == "triton":
        return triton_dwconv2d
    if name == "reference":
        return decoupled_dwconv2d_reference
    if name == "unfold":
        return unfold_dwconv2d
    if name == "cudnn":
        return static_dwconv2d
    # A fresh compile per shape and dtype: it specialises to static shapes, and twelve of them
    # would pass dynamo's recompile limit and fall back to eager.
    torch._dynamo.reset()
    return torch.compile(decoupled_dwconv2d_reference, dynamic=False)


def make_timer(device: torch.device, repeats: int) -> Callable[[Callable[[], object]], float]:
    """Milliseconds per call of a function (median), after one warm-up call."""
    if device.type == "cuda":

        def time_cuda(fn: Callable[[], object]) -> float:
            fn()
            torch.cuda.synchronize(device)
            return triton.testing.do_bench(fn, return_mode="median")

        return time_cuda

    def time_cpu(fn: Callable[[], object]) -> float:
        fn()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return 1e3 * statistics.median(samples)

    return time_cpu


def copy_bandwidth(device: torch.device, timer: Callable[[Callable[[], object]], float]) -> float:
    """Device copy bandwidth in GB/s, counting the bytes read and the bytes written."""
    numel = 2**28 if device.type == "cuda" else 2**23  # float32: 1 GiB on CUDA, 32 MiB on CPU
    source = torch.randn(numel, device=device)
    target = torch.empty_like(source)
    milliseconds = timer(lambda: target.copy_(source))
    return 2 * source.nbytes / milliseconds / 1e6


@dataclass(frozen=True)
class Sizes:
    """Element counts of one call's tensors."""

    x: int
    spatial: int
    channel: int
    out: int
    weight: int  # the static depthwise filter of the cudnn row: C x K x K


def sizes(layer: Layer, batch: int) -> Sizes:
    padding = (KERNEL_SIZE - 1) // 2
    height_out, width_out = output_size(
        layer.height, layer.width, KERNEL_SIZE, layer.stride, padding, 1
    )
    taps = KERNEL_SIZE * KERNEL_SIZE
    return Sizes(
        x=batch * layer.channels * layer.height * layer.width,
        spatial=batch * taps * height_out * width_out,
        channel=batch * layer.channels * taps,
        out=batch * layer.channels * height_out * width_out,
        weight=layer.channels * taps,
    )


def op_bytes(layer: Layer, batch: int, element_size: int, name: str) -> tuple[int, int]:
    """(forward, forward + backward) bytes that must move for one call of implementation
    ``name``: its inputs read once, its outputs written once."""
    n = sizes(layer, batch)
    filters = n.weight if name == "cudnn" else n.spatial + n.channel
    forward = n.x + filters + n.out
    backward = n.out + n.x + filters + n.x + filters
    return element_size * forward, element_size * (forward + backward)


def op_call(layer: Layer, batch: int) -> OpCall:
    """The op call of ``layer`` at ``batch`` (K=3, padding 1, dilation 1)."""
    padding = (KERNEL_SIZE - 1) // 2
    height_out, width_out = output_size(
        layer.height, layer.width, KERNEL_SIZE, layer.stride, padding, 1
    )
    taps = KERNEL_SIZE * KERNEL_SIZE
    return OpCall(
        (batch, layer.channels, layer.height, layer.width),
        (batch, taps, height_out, width_out),
        KERNEL_SIZE,
        layer.stride,
        padding,
        1,
    )


def kernels_at(revision: str) -> ModuleType:
    """The Triton kernel module as it was at git ``revision``, imported beside today's (as
    ``dcsd.kernels._triton_at_<revision>``), for before/after comparisons in one run."""
    path = Path(triton_decoupled_dwconv.__file__)
    source = subprocess.run(
        ["git", "-C", str(path.parent), "show", f"{revision}:./{path.name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Triton reads a kernel's source back from its file, so the file must outlive this call.
    folder = Path(tempfile.mkdtemp(prefix="dcsd_kernels_"))
    file = folder / f"triton_at_{revision}.py"
    file.write_text(source)
    name = f"dcsd.kernels._triton_at_{revision.replace('~', '_').replace('^', '_')}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up while they are defined.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def default_config(module: ModuleType):
    """``None`` (each kernel's own default) where ``module`` has per-kernel configs, else its one
    default tile (older revisions)."""
    return None if hasattr(module, "KERNEL_CONFIGS") else module.DEFAULT_CONFIG


def triton_moved_bytes(
    layer: Layer, batch: int, dtype: torch.dtype, module: ModuleType = triton_decoupled_dwconv
) -> tuple[int, int]:
    """(forward, forward + backward) bytes the Triton implementation reads and writes, launch by
    launch (``launch_plan``: each tensor argument of a kernel once, plus the torch passes that
    finish a gradient), with the default tile configs of ``module``."""
    call = op_call(layer, batch)
    launches = plan(call, dtype, torch.contiguous_format, default_config(module), module)
    forward = sum(launch.moved_bytes for launch in launches if not launch.backward)
    return forward, sum(launch.moved_bytes for launch in launches)


@dataclass
class Timing:
    layer: Layer
    implementation: str
    forward_ms: float
    training_ms: float
    forward_bytes: int
    training_bytes: int
    moved: tuple[int, int] | None  # bytes the implementation moves (fwd, fwd+bwd), if counted


def bench_layer(
    layer: Layer,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    names: list[str],
    timer: Callable[[Callable[[], object]], float],
    layout: torch.memory_format = torch.contiguous_format,
) -> list[Timing]:
    padding = (KERNEL_SIZE - 1) // 2
    options = (KERNEL_SIZE, layer.stride, padding, 1)
    height_out, width_out = output_size(layer.height, layer.width, *options)
    taps = KERNEL_SIZE * KERNEL_SIZE
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    x = randn(batch, layer.channels, layer.height, layer.width).contiguous(memory_format=layout)
    spatial = randn(batch, taps, height_out, width_out).contiguous(memory_format=layout)
    channel = randn(batch, layer.channels, taps)
    weight = randn(layer.channels, 1, KERNEL_SIZE, KERNEL_SIZE)
    grad_out = randn(batch, layer.channels, height_out, width_out).contiguous(memory_format=layout)
    expected = decoupled_dwconv2d_reference(
        x.double(), spatial.double(), channel.double(), *options
    )
    expected_static = F.conv2d(
        x.double(), weight.double(), stride=layer.stride, padding=padding, groups=layer.channels
    )

    timings = []
    for name in names:
        fn = implementation(name)
        filters = (weight,) if name == "cudnn" else (spatial, channel)
        target = expected_static if name == "cudnn" else expected
        with torch.no_grad():
            error = (fn(x, *filters, *options).double() - target).abs().max().item()
        if error > CHECK_TOLERANCE[dtype] * target.abs().max().item():
            raise AssertionError(f"{name} is off by {error:.3g} on {layer} in {dtype}")
        inputs = [t.detach().requires_grad_() for t in (x, *filters)]

        def forward(fn=fn, filters=filters) -> torch.Tensor:
            with torch.no_grad():
                return fn(x, *filters, *options)

        def training(fn=fn, inputs=inputs) -> tuple[torch.Tensor, ...]:
            return torch.autograd.grad(fn(*inputs, *options), inputs, grad_out)

        must = op_bytes(layer, batch, x.element_size(), name)
        moved = triton_moved_bytes(layer, batch, dtype) if name == "triton" else None
        timings.append(Timing(layer, name, timer(forward), timer(training), *must, moved))
    return timings


def bandwidth_cells(num_bytes: int, milliseconds: float, copy_gbps: float) -> list[str]:
    gbps = num_bytes / milliseconds / 1e6
    share = 100 * gbps / copy_gbps
    return [f"{milliseconds:.3f}", f"{gbps:.0f}" if gbps >= 10 else f"{gbps:.2f}", f"{share:.1f}%"]


def megabytes(pair: tuple[int, int] | None) -> str:
    return "-" if pair is None else f"{pair[0] / 1e6:.1f} / {pair[1] / 1e6:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(timings: list[Timing], dtype_name: str, batch: int, copy_gbps: float) -> str:
    """The per-layer table, the totals over the 16 layers and the Triton speedups."""
    header = ["layer", "x", "C", "H x W", "stride", "impl"]
    header += ["fwd ms", "fwd GB/s", "fwd % copy", "fwd+bwd ms", "fwd+bwd GB/s", "fwd+bwd % copy"]
    header += ["must MB fwd / fwd+bwd", "moved MB fwd / fwd+bwd"]
    rows = [
        [
            t.layer.name,
            str(t.layer.count),
            str(t.layer.channels),
            f"{t.layer.height}x{t.layer.width}",
            str(t.layer.stride),
            t.implementation,
            *bandwidth_cells(t.forward_bytes, t.forward_ms, copy_gbps),
            *bandwidth_cells(t.training_bytes, t.training_ms, copy_gbps),
            megabytes((t.forward_bytes, t.training_bytes)),
            megabytes(t.moved),
        ]
        for t in timings
    ]
    totals: dict[str, list[float]] = {}
    for t in timings:
        total = totals.setdefault(t.implementation, [0.0, 0.0, 0.0, 0.0])
        count = t.layer.count
        total[0] += count * t.forward_ms
        total[1] += count * t.training_ms
        total[2] += count * t.forward_bytes
        total[3] += count * t.training_bytes
    total_rows = [
        [
            name,
            *bandwidth_cells(int(total[2]), total[0], copy_gbps),
            *bandwidth_cells(int(total[3]), total[1], copy_gbps),
        ]
        for name, total in totals.items()
    ]
    total_header = ["impl", *header[6:12]]
    text = [
        f"### {dtype_name}, batch {batch}",
        "",
        markdown_table(header, rows),
        "",
        f"Totals over the 16 layers ({dtype_name}):",
        "",
        markdown_table(total_header, total_rows),
    ]
    if "triton" in totals:
        speedups = [
            f"triton vs {name}: forward {totals[name][0] / totals['triton'][0]:.2f}x, "
            f"forward+backward {totals[name][1] / totals['triton'][1]:.2f}x"
            for name in ("unfold", "compile", "reference", "cudnn")
            if name in totals
        ]
        text += ["", f"Speedups ({dtype_name}, summed time): " + "; ".join(speedups) + "."]
        moved = [sum(t.layer.count * t.moved[i] for t in timings if t.moved) for i in (0, 1)]
        must = [totals["triton"][2], totals["triton"][3]]
        text += [
            "",
            f"Bytes over the 16 layers ({dtype_name}): triton moves {moved[0] / 1e6:.0f} MB "
            f"forward and {moved[1] / 1e6:.0f} MB forward+backward, against "
            f"{must[0] / 1e6:.0f} MB and {must[1] / 1e6:.0f} MB that must move "
            f"({moved[1] / must[1]:.2f}x).",
        ]
    return "\n".join(text)


def bytes_report(dtype_names: list[str], batch: int, baseline: str | None = None) -> str:
    """Per layer and in total: MB that must move and MB the Triton implementation moves (and, with
    ``baseline``, what the kernels at that git revision moved)."""
    modules = {"now": triton_decoupled_dwconv}
    if baseline is not None:
        modules = {baseline: kernels_at(baseline), **modules}
    header = ["dtype", "layer", "x", "must MB fwd / fwd+bwd"]
    header += [f"moved MB fwd / fwd+bwd ({name})" for name in modules]
    header += [f"ratio ({name})" for name in modules]
    rows, totals = [], {}
    for dtype_name in dtype_names:
        dtype = DTYPES[dtype_name]
        element = torch.empty((), dtype=dtype).element_size()
        for layer in LAYERS:
            must = op_bytes(layer, batch, element, "triton")
            moved = [triton_moved_bytes(layer, batch, dtype, m) for m in modules.values()]
            rows.append(
                [dtype_name, layer.name, str(layer.count), megabytes(must)]
                + [megabytes(pair) for pair in moved]
                + [f"{pair[1] / must[1]:.2f}" for pair in moved]
            )
            total = totals.setdefault(dtype_name, [0] * (1 + len(modules)))
            total[0] += layer.count * must[1]
            for index, pair in enumerate(moved):
                total[1 + index] += layer.count * pair[1]
    title = f"batch {batch}, K={KERNEL_SIZE}, default tile config"
    lines = [title, "", markdown_table(header, rows)]
    for dtype_name, (must, *moved) in totals.items():
        lines.append(
            f"{dtype_name}, 16 layers, forward+backward: {must / 1e6:.0f} MB must move; triton "
            + ", ".join(
                f"{name}: {total / 1e6:.0f} MB ({total / must:.2f}x)"
                for name, total in zip(modules, moved, strict=True)
            )
        )
    return "\n".join(lines)


def kernel_times_report(dtype_names: list[str], batch: int, device: torch.device) -> str:
    """Per layer, the GPU time of every kernel one forward and backward of the Triton
    implementation launches, with the generators' input side (``mean_and_pointwise_conv``) as
    ``DCSDConv`` runs it (torch.profiler's device times, averaged over 20 steps, so host launch
    time does not count), to set beside ``bench/bench_compile.py --model``."""
    from torch.profiler import ProfilerActivity, profile

    steps = 20
    lines = [f"batch {batch}, K={KERNEL_SIZE}, default tile configs; us per call, mean of {steps}"]
    for dtype_name in dtype_names:
        dtype = DTYPES[dtype_name]
        rows, names = [], []
        for layer in LAYERS:
            call = op_call(layer, batch)
            x, spatial, channel = (
                torch.randn(t.shape, device=device, dtype=dtype).requires_grad_()
                for t in call.inputs(dtype, torch.contiguous_format)
            )
            options = call.kernel_size, call.stride, call.padding, call.dilation
            grad_out = torch.randn(batch, layer.channels, *spatial.shape[2:], device=device)
            grad_out = grad_out.to(dtype)
            # The generators' input side as DCSDConv runs it: the mean and the spatial branch's
            # 1x1 convolution, with x passed through to the op (one input-gradient kernel).
            weight = torch.randn(spatial.shape[1], layer.channels, device=device, dtype=dtype)
            bias = torch.zeros(spatial.shape[1], device=device, dtype=dtype)
            grad_mean = torch.randn(batch, layer.channels, device=device, dtype=dtype)
            grad_projected = torch.randn(spatial.shape, device=device, dtype=dtype)

            tensors = (x, spatial, channel, weight, bias, grad_out, grad_mean, grad_projected)

            def step(tensors=tensors, options=options):
                x, spatial, channel, weight, bias, *grads = tensors
                mean, projected, through = mean_and_pointwise_conv(
                    x, weight, bias, options[1], backend="triton"
                )
                out = triton_dwconv2d(through, spatial, channel, *options)
                return torch.autograd.grad((out, mean, projected), (x, spatial, channel), grads)

            step()  # compile (and autotune) outside the profile
            torch.cuda.synchronize(device)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(steps):
                    step()
                torch.cuda.synchronize(device)
            times = {}
            for event in prof.key_averages():
                total = getattr(event, "self_device_time_total", None)
                if total is None:
                    total = event.self_cuda_time_total
                if total > 0:
                    times[event.key] = total / steps
            names += [name for name in times if name not in names]
            rows.append((layer, times))
        header = ["dtype", "layer", "x", *names, "sum"]
        table = [
            [dtype_name, layer.name, str(layer.count)]
            + [f"{times.get(name, 0.0):.1f}" for name in names]
            + [f"{sum(times.values()):.1f}"]
            for layer, times in rows
        ]
        total = sum(layer.count * sum(times.values()) for layer, times in rows)
        lines += ["", markdown_table(header, table), f"{dtype_name}, 16 layers: {total:.0f} us"]
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), default=["bfloat16", "float32"]
    )
    parser.add_argument("--impls", nargs="+", choices=IMPLEMENTATIONS, default=None)
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 2 on CPU")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="channels / 32 and sides / 4, batch 1: small enough for TRITON_INTERPRET=1 on CPU",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per number on CPU")
    parser.add_argument(
        "--channels-last", action="store_true", help="x, spatial and grad_out in NHWC"
    )
    parser.add_argument(
        "--count-bytes",
        action="store_true",
        help="only print the bytes that must move and the bytes Triton moves (no device needed)",
    )
    parser.add_argument(
        "--kernel-times",
        action="store_true",
        help="CUDA: GPU time of each Triton kernel and torch pass per layer (torch.profiler)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="with --count-bytes: also count the kernels at this git revision",
    )
    parser.add_argument("--out", type=Path, default=None, help="append the tables to this file")
    args = parser.parse_args()

    if args.count_bytes:
        print(bytes_report(args.dtypes, args.batch or 64, args.baseline))
        return
    device = torch.device(args.device)
    if args.kernel_times:
        if device.type != "cuda":
            parser.error("--kernel-times needs a CUDA device")
        text = kernel_times_report(args.dtypes, args.batch or 64, device)
        print(text)
        if args.out is not None:
            with args.out.open("a") as file:
                file.write("\n\n## Triton kernel times per layer (torch.profiler)\n\n")
                file.write(f"- {device_name(device)}; torch {torch.__version__}, ")
                file.write(f"triton {triton.__version__}\n\n{text}\n")
        return
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if args.impls is not None:
        names = args.impls
    elif device.type == "cuda" or (args.tiny and interpreted):
        names = list(IMPLEMENTATIONS)
    else:
        names = [name for name in IMPLEMENTATIONS if name != "triton"]
    if device.type == "cpu" and "triton" in names and not interpreted:
        parser.error("--impls triton on CPU needs TRITON_INTERPRET=1 (and --tiny to finish)")
    batch = args.batch or (1 if args.tiny else 64 if device.type == "cuda" else 2)
    layers = [tiny(layer) for layer in LAYERS] if args.tiny else list(LAYERS)

    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    timer = make_timer(device, args.repeats)
    copy_gbps = copy_bandwidth(device, timer)
    heading = [
        f"## decoupled_dwconv2d, K={KERNEL_SIZE}, ResNet50-DCSD at 256x128 (last stride 1)",
        "",
        f"- device: {device_name(device)}; measured copy bandwidth {copy_gbps:.0f} GB/s "
        "(read + write)",
        f"- torch {torch.__version__}, triton {triton.__version__}"
        + (", TRITON_INTERPRET=1" if interpreted else "")
        + f"; {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}",
        f"- batch {batch}{', tiny shapes (channels / 32, sides / 4)' if args.tiny else ''}"
        f"{', channels_last' if args.channels_last else ', NCHW'}; "
        f"times in ms, {'do_bench median' if device.type == 'cuda' else 'perf_counter median'}",
    ]
    print("\n".join(heading), flush=True)
    sections = ["\n".join(heading)]
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        timings = []
        for layer in layers:
            timings += bench_layer(layer, batch, dtype, device, names, timer, layout)
        section = report(timings, dtype_name, batch, copy_gbps)
        print("\n" + section, flush=True)
        sections.append(section)

    if args.out is not None:
        prefix = "\n\n" if args.out.exists() else "# Kernel benchmarks\n\n"
        with args.out.open("a") as file:
            file.write(prefix + "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
