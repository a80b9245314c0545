"""Throughput and peak memory of ResNet50-DCSD against the static ResNet50 baseline.

A training step is forward, the DCSD loss (paper Eq. 5), backward and an Adam step; inference is
an eval-mode forward under ``torch.inference_mode``. Every measurement runs in a fresh process, so
peak memory belongs to that model and mode alone: on CUDA ``torch.cuda.max_memory_allocated``,
on CPU the process's peak resident set size (which includes Python and torch themselves).

    python bench/bench_model.py                         # CUDA: batch 64, 256x128, bf16, NHWC
    python bench/bench_model.py --device cpu --batch 8  # CPU inference
    python bench/bench_model.py --out bench/RESULTS.md  # append the table
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import dcsd
from dcsd.losses import DCSDLoss

MODELS = ("resnet50_dcsd", "resnet50_reid")
NUM_DOMAINS, NUM_CAMERAS = 5, 32
IMAGES_PER_IDENTITY = 4


@dataclass(frozen=True)
class Setting:
    device: str
    batch: int
    height: int
    width: int
    bf16: bool
    channels_last: bool
    warmup: int
    steps: int
    num_classes: int


def measure(name: str, mode: str, setting: Setting) -> tuple[float, float]:
    """(images per second, peak memory in MiB) of ``steps`` timed steps after ``warmup``."""
    torch.manual_seed(0)
    device = torch.device(setting.device)
    training = mode == "train"
    model = dcsd.create_model(
        name,
        num_classes=setting.num_classes if training else 0,
        num_domains=NUM_DOMAINS,
        num_cameras=NUM_CAMERAS,
    ).to(device)
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train(training)
    images = torch.randn(setting.batch, 3, setting.height, setting.width, device=device)
    images = images.contiguous(memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=setting.bf16)

    if training:
        optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)
        criterion = DCSDLoss()
        pids = torch.arange(setting.batch, device=device) // IMAGES_PER_IDENTITY
        pids = pids % setting.num_classes
        domains = torch.randint(0, NUM_DOMAINS, (setting.batch,), device=device)
        camids = torch.randint(0, NUM_CAMERAS, (setting.batch,), device=device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss, _ = criterion(model(images), pids, domains, camids)
            loss.backward()
            optimizer.step()

    else:

        def step() -> None:
            with torch.inference_mode(), autocast:
                model(images)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(setting.warmup):
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(setting.steps):
        step()
    synchronize()
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return setting.batch * setting.steps / elapsed, peak


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def versions() -> str:
    parts = [f"torch {torch.__version__}", f"dcsd {_version('dcsd')}"]
    triton = _version("triton")
    if triton:
        parts.append(f"triton {triton}")
    return ", ".join(parts)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default 64 on CUDA, 8 on CPU")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("train", "infer"),
        default=None,
        help="default: train and infer on CUDA, infer on CPU",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default on CUDA only)")  # fmt: skip
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels_last memory format (default on CUDA only)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=None, help="default 10 on CUDA, 2 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="default 30 on CUDA, 5 on CPU")
    parser.add_argument(
        "--num-classes", type=int, default=4203, help="identities (paper's 5 datasets: 4203)"
    )
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    on_cuda = args.device.startswith("cuda")
    if args.batch is None:
        args.batch = 64 if on_cuda else 8
    if args.modes is None:
        args.modes = ["train", "infer"] if on_cuda else ["infer"]
    if args.bf16 is None:
        args.bf16 = on_cuda
    if args.channels_last is None:
        args.channels_last = on_cuda
    if args.warmup is None:
        args.warmup = 10 if on_cuda else 2
    if args.steps is None:
        args.steps = 30 if on_cuda else 5
    return args


def main() -> None:
    args = parse_args()
    setting = Setting(
        device=args.device,
        batch=args.batch,
        height=args.size[0],
        width=args.size[1],
        bf16=args.bf16,
        channels_last=args.channels_last,
        warmup=args.warmup,
        steps=args.steps,
        num_classes=args.num_classes,
    )
    header = (
        f"### bench_model: {device_name(args.device)} ({datetime.date.today().isoformat()})\n\n"
        f"{versions()}; batch {setting.batch}, {setting.height}x{setting.width}, "
        f"bf16 autocast {'on' if setting.bf16 else 'off'}, channels_last "
        f"{'on' if setting.channels_last else 'off'}, {setting.steps} timed steps after "
        f"{setting.warmup} warm-up; peak memory: "
        f"{'max_memory_allocated' if args.device.startswith('cuda') else 'process peak RSS'}.\n"
    )
    lines = [
        "| model | mode | images/s | peak memory (MiB) | images/s vs static |",
        "|---|---|---:|---:|---:|",
    ]
    print(header)
    print("\n".join(lines), flush=True)
    # A fresh process per measurement: peak memory and allocator state are not shared.
    context = multiprocessing.get_context("spawn")
    for mode in args.modes:
        results = {}
        for name in args.models:
            with context.Pool(1) as pool:
                results[name] = pool.apply(measure, (name, mode, setting))
        for name, (throughput, peak) in results.items():
            static = results.get("resnet50_reid")
            ratio = f"{throughput / static[0]:.2f}x" if static else "-"
            line = f"| {name} | {mode} | {throughput:.1f} | {peak:.0f} | {ratio} |"
            lines.append(line)
            print(line, flush=True)
    if args.out is not None:
        with args.out.open("a") as file:
            file.write("\n" + header + "\n" + "\n".join(lines) + "\n")
        print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
