"""Registers, spills and shared memory of every Triton kernel, compiled for sm_90 and sm_80 here.

No GPU needed: the kernels are compiled for a named target (see ``dcsd.kernels.offline_compile``)
with the specialisations ResNet50-DCSD's op calls produce (recorded from the model on meta
tensors, batch 64, input 256x128), in NCHW and channels_last, for each tile config. One row per
(kernel, config, arch): the largest value over the model's specialisations, dtypes and layouts.

    python bench/bench_compile.py                        # default tile, bf16/fp16/fp32
    python bench/bench_compile.py --configs all          # every config the autotuner may pick
    python bench/bench_compile.py --configs all --out bench/RESULTS.md
    python bench/bench_compile.py --model --baseline <rev>  # the performance model, before/after

Exits with status 1 if any kernel spills registers.

``--model`` is an offline performance model of one forward and backward of the 16 layers
(bf16, NCHW, sm_90, H100/H200 figures), read from the SASS of each launch of ``launch_plan``:

- issued instructions per thread: the SASS, each loop body counted as often as the program runs
  it (``SassProfile``); per element-tap: all threads' instructions over N*C*Ho*Wo*K*K;
- issue-bound time: threads x instructions per thread / 32 / (132 SMs x 4 issue/clk x 1.755 GHz);
- DRAM time: the bytes the launch moves (each tensor argument once) at 3.0 TB/s; the torch
  passes that finish a gradient count as DRAM time only;
- warps per SM from registers and shared memory (64K registers, 228 KB, 64 warps, 32 programs);
- an estimate per launch: the larger of its issue and DRAM times;
- the whole layer adds the generators' passes around the op in ``DCSDConv`` (x read once by
  ``mean_and_pointwise_conv``'s forward kernel, twice before it (the mean and the 1x1 spatial
  conv apart), spatial written; backward: ``mean_and_pointwise_conv``'s kernel
  reading the op's dx and writing x's whole gradient, its dW reading x: 3 x-sized passes and 2
  spatial-sized; 5 when the op's dx was added by autograd, 9 before that op, when the conv's dX
  and the mean's gradient were written apart and added in two passes).

"default" rows launch with each kernel's default tile, "tuned" with the config of its tuning list
the model estimates fastest for that kernel and layer (for dspatial/dchannel, with the passes
that finish it): what DCSD_AUTOTUNE=1 should find.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import triton
from bench_kernels import LAYERS, kernels_at, op_bytes, op_call
from results_csv import append_rows

import dcsd
from dcsd.kernels import triton_decoupled_dwconv
from dcsd.kernels.offline_compile import (
    KERNELS,
    SassProfile,
    compile_call,
    compile_launch,
    plan,
    record_op_calls,
)
from dcsd.kernels.triton_decoupled_dwconv import DEFAULT_CONFIG, TUNING_CONFIGS

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


SMS = 132
ISSUE_PER_CLOCK = 4
CLOCK_HZ = 1.755e9
DRAM_BYTES_PER_S = 3.0e12
REGISTERS_PER_SM = 65536
SHARED_PER_SM = 228 * 1024
MAX_WARPS_PER_SM = 64
MAX_PROGRAMS_PER_SM = 32
MODEL_ARCH = 90
# The model's total columns in bench/bench_compile.csv (after arch, dtype, kernels, part, config).
CSV_VALUES = ("mb", "x_floor", "issue_us", "dram_us", "est_us")


def warps_per_sm(registers: int, shared_bytes: int, num_warps: int) -> int:
    """Resident warps per SM: registers are allocated per warp in units of 256 (8 per thread),
    each program reserves 1 KB of shared memory beside its own."""
    by_registers = REGISTERS_PER_SM // (-(-registers // 8) * 8 * 32) // num_warps
    by_shared = SHARED_PER_SM // (shared_bytes + 1024)
    programs = min(MAX_PROGRAMS_PER_SM, MAX_WARPS_PER_SM // num_warps, by_registers, by_shared)
    return programs * num_warps


@dataclass(frozen=True)
class Estimate:
    """The model's figures for one launch of one layer (times in microseconds, one layer)."""

    kernel: str
    config: str
    backward: bool
    registers: int
    warps_per_sm: int
    issued_per_thread: float
    per_element_tap: float
    vector_share: float
    loads_per_thread: float
    barriers_per_thread: float
    shuffles_per_thread: float
    moved_bytes: int
    issue_us: float
    dram_us: float

    @property
    def estimate_us(self) -> float:
        return max(self.issue_us, self.dram_us)


def estimate(launch, config, element_taps: int, element_bytes: int) -> Estimate:
    dram_us = 1e6 * launch.moved_bytes / DRAM_BYTES_PER_S
    if launch.kernel is None:
        nan = float("nan")
        return Estimate(
            launch.name, "torch", launch.backward, 0, 0, nan, nan, nan, nan, nan, nan,
            launch.moved_bytes, 0.0, dram_us,
        )  # fmt: skip
    compiled = compile_launch(launch, MODEL_ARCH)
    profile = SassProfile.from_sass(compiled.sass, launch.loop_trips, element_bytes)
    programs = launch.grid[0] * launch.grid[1] * launch.grid[2]
    warps = programs * config.num_warps
    issue_us = 1e6 * warps * profile.issued / (SMS * ISSUE_PER_CLOCK * CLOCK_HZ)
    usage = compiled.usage
    return Estimate(
        launch.name,
        str(config),
        launch.backward,
        usage.registers,
        warps_per_sm(usage.registers, usage.shared_bytes, config.num_warps),
        profile.issued,
        32 * warps * profile.issued / element_taps,
        profile.vector_loads / profile.global_loads if profile.global_loads else 0.0,
        profile.global_loads,
        profile.barriers,
        profile.shuffles,
        launch.moved_bytes,
        issue_us,
        dram_us,
    )


def kernel_configs(module: ModuleType, kernel: str) -> tuple:
    """``kernel``'s default tile and what the tuner may pick (one list for all kernels in older
    revisions)."""
    per_kernel = getattr(module, "KERNEL_CONFIGS", None)
    return per_kernel[kernel] if per_kernel else module.TUNING_CONFIGS


def model_layer(layer, module: ModuleType, batch: int, dtype: torch.dtype) -> dict[str, list]:
    """Per launch of one layer: [default estimate, tuned estimate]; the passes that finish the
    filter gradients follow the dspatial/dchannel kernel's config, and a pass that a config does
    not need is None."""
    call = op_call(layer, batch)
    taps = call.kernel_size**2
    element_taps = batch * layer.channels * call.spatial_shape[2] * call.spatial_shape[3] * taps
    element = torch.empty((), dtype=dtype).element_size()
    layout = torch.contiguous_format
    kernels = ("forward", "grad_input", "grad_filters")
    configs = list(dict.fromkeys(c for name in kernels for c in kernel_configs(module, name)))
    by_config = {
        config: {
            launch.name: estimate(launch, config, element_taps, element)
            for launch in plan(call, dtype, layout, config, module)
        }
        for config in configs
    }

    def cost(config, name: str) -> float:
        # The dspatial/dchannel kernel's config also decides the passes that finish it.
        per = by_config[config]
        if name != "grad_filters":
            return per[name].estimate_us
        return sum(e.estimate_us for n, e in per.items() if n not in kernels or n == name)

    chosen = {}
    for name in kernels:
        choices = kernel_configs(module, name)
        best = min(choices, key=lambda c, name=name: cost(c, name))
        chosen[name] = (choices[0], best)
    result = {name: [by_config[c][name] for c in chosen[name]] for name in kernels}
    passes = dict.fromkeys(p for per in by_config.values() for p in per if p not in result)
    for name in passes:
        result[name] = [by_config[c].get(name) for c in chosen["grad_filters"]]
    return result


def generator_passes(revision: str) -> tuple[int, int]:
    """x-sized passes of the generators' (forward, backward) with the kernels at ``revision`` (a
    label of ``model_report``: a git revision, ``+`` for the working tree). Backward: 9 before
    ``mean_and_pointwise_conv``, 5 with it, 3 once the op's dx passes through it; forward: 2
    (the mean and the convolution read x apart), 1 once its Triton forward reads x once."""
    path = "kernels/triton_mean_pointwise.py"
    if revision.endswith("+"):
        file = Path(__file__).resolve().parents[1] / path
        source = file.read_text() if file.exists() else None
    else:
        shown = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True)
        source = shown.stdout.decode() if shown.returncode == 0 else None
    if source is None:
        return 2, 9
    forward = 1 if "_mean_pointwise_forward_kernel" in source else 2
    return forward, 3 if "HAS_THROUGH" in source else 5


def generator_bytes(layer, batch: int, element: int, passes: tuple[int, int]) -> tuple[int, int]:
    """(forward, backward) bytes of DCSDConv's passes around the op (see the module docstring)
    with ``passes`` x-sized (forward, backward) passes."""
    call = op_call(layer, batch)
    x = batch * layer.channels * layer.height * layer.width * element
    spatial = batch * call.spatial_shape[1] * call.spatial_shape[2] * call.spatial_shape[3]
    spatial *= element
    return passes[0] * x + spatial, passes[1] * x + 2 * spatial


def _us(value: float) -> str:
    return f"{value:.1f}"


def model_report(modules: dict[str, ModuleType], batch: int) -> tuple[str, list[dict[str, str]]]:
    """The model's Markdown tables, and its totals as rows of ``bench/bench_compile.csv``."""
    dtype = torch.bfloat16
    element = 2
    results = {
        name: {layer: model_layer(layer, module, batch, dtype) for layer in LAYERS}
        for name, module in modules.items()
    }
    passes = {name: generator_passes(name) for name in modules}
    lines = []
    header = ["layer", "x", "kernel", "config", "regs", "warps/SM", "SASS/thread"]
    header += ["SASS/elem-tap", "vector LDG", "LDG/thread", "BAR", "SHFL", "MB", "issue us"]
    header += ["DRAM us", "issue/DRAM"]
    for name, per_layer in results.items():
        rows = []
        for layer, launches in per_layer.items():
            for kernel, pair in launches.items():
                for kind, e in zip(("default", "tuned"), pair, strict=True):
                    if e is None:
                        continue
                    torch_pass = e.config == "torch"
                    rows.append(
                        [
                            layer.name,
                            str(layer.count),
                            kernel,
                            f"{kind} torch pass" if torch_pass else f"{kind} {e.config}",
                            *(
                                ["-"] * 8
                                if torch_pass
                                else [
                                    str(e.registers),
                                    str(e.warps_per_sm),
                                    f"{e.issued_per_thread:.0f}",
                                    f"{e.per_element_tap:.2f}",
                                    f"{100 * e.vector_share:.0f}%",
                                    f"{e.loads_per_thread:.0f}",
                                    f"{e.barriers_per_thread:.0f}",
                                    f"{e.shuffles_per_thread:.0f}",
                                ]
                            ),
                            f"{e.moved_bytes / 1e6:.1f}",
                            "-" if torch_pass else _us(e.issue_us),
                            _us(e.dram_us),
                            "-" if torch_pass else f"{e.issue_us / e.dram_us:.2f}",
                        ]
                    )
        lines += [f"### Kernels {name}: per layer (one layer; x = layers of that shape)", ""]
        lines += [_table(header, rows), ""]

    # Totals over the 16 layers, side by side.
    total_header = ["part", "config"]
    for name in results:
        total_header += [f"MB ({name})", f"x floor ({name})", f"issue us ({name})"]
        total_header += [f"DRAM us ({name})", f"est. us ({name})"]
    total_rows = []
    csv_rows = []
    kernel_names = list(
        dict.fromkeys(k for r in results.values() for launches in r.values() for k in launches)
    )
    parts = [(k, lambda e, k=k: e.kernel == k) for k in kernel_names]
    parts += [
        ("forward total", lambda e: not e.backward),
        ("backward total", lambda e: e.backward),
        ("op (forward + backward)", lambda e: True),
        ("whole layer (op + generators)", None),
    ]
    for kind_index, kind in enumerate(("default", "tuned")):
        for part, selected in parts:
            row = [part, kind]
            for name, per_layer in results.items():
                moved = issue = dram = est = floor = 0.0
                for layer, launches in per_layer.items():
                    forward_floor, op_floor = op_bytes(layer, batch, element, "triton")
                    chosen = [pair[kind_index] for pair in launches.values()]
                    picked = [e for e in chosen if e and (selected is None or selected(e))]
                    count = layer.count
                    moved += count * sum(e.moved_bytes for e in picked)
                    issue += count * sum(e.issue_us for e in picked)
                    dram += count * sum(e.dram_us for e in picked)
                    est += count * sum(e.estimate_us for e in picked)
                    if selected is None:
                        extra = sum(generator_bytes(layer, batch, element, passes[name]))
                        moved += count * extra
                        dram += count * 1e6 * extra / DRAM_BYTES_PER_S
                        est += count * 1e6 * extra / DRAM_BYTES_PER_S
                    if part == "forward total":
                        floor += count * forward_floor
                    elif part == "backward total":
                        floor += count * (op_floor - forward_floor)
                    else:
                        floor += count * op_floor
                ratio = f"{moved / floor:.2f}" if part not in kernel_names else "-"
                cells = [f"{moved / 1e6:.0f}", ratio, _us(issue), _us(dram), _us(est)]
                row += cells
                csv_rows.append(
                    dict(
                        arch="sm_90",
                        dtype="bfloat16",
                        kernels=name,
                        part=part,
                        config=kind,
                        **dict(zip(CSV_VALUES, cells, strict=True)),
                    )
                )
            total_rows.append(row)
    floor_us = sum(layer.count * op_bytes(layer, batch, element, "triton")[1] for layer in LAYERS)
    lines += [
        "### Totals over the 16 layers (x floor: bytes over the op's must-move bytes; "
        "the whole layer against the op's floor)",
        "",
        _table(total_header, total_rows),
        "",
        f"Op floor, forward + backward: {floor_us / 1e6:.0f} MB, "
        f"{1e6 * floor_us / DRAM_BYTES_PER_S:.1f} us at 3.0 TB/s.",
    ]
    order = list(results)  # rows grouped by kernels, as the CSV holds them
    csv_rows.sort(key=lambda row: order.index(row["kernels"]))
    return "\n".join(lines), csv_rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def model_main(args) -> int:
    modules = {}
    if args.baseline is not None:
        modules[args.baseline] = kernels_at(args.baseline)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "kernels"]).returncode
    modules[f"{head}{'+' if dirty else ''}"] = triton_decoupled_dwconv
    report, csv_rows = model_report(modules, args.batch)
    date = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    command = "python bench/bench_compile.py --model" + (
        f" --baseline {args.baseline}" if args.baseline else ""
    )
    text = "\n".join(
        [
            "## Offline performance model of the Triton kernels (SASS for sm_90, no GPU)",
            "",
            f"- `{command}`; torch {torch.__version__}, triton {triton.__version__}; {date}",
            f"- ResNet50-DCSD's 16 layers, batch {args.batch}, 256x128, bf16, NCHW; "
            f"{SMS} SMs x {ISSUE_PER_CLOCK} issue/clk x {CLOCK_HZ / 1e9} GHz, DRAM "
            f"{DRAM_BYTES_PER_S / 1e12:.1f} TB/s; times in us",
            "",
            report,
        ]
    )
    print(text)
    if args.out is not None:
        with args.out.open("a") as file:
            file.write("\n\n" + text + "\n")
    if args.csv is not None:
        append_rows(args.csv, csv_rows)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", choices=["default", "all"], default="default")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=sorted(DTYPES))
    parser.add_argument("--archs", nargs="+", type=int, default=[90, 80])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    parser.add_argument("--model", action="store_true", help="the offline performance model")
    parser.add_argument(
        "--csv", type=Path, help="with --model: append the totals here (bench/bench_compile.csv)"
    )
    parser.add_argument(
        "--baseline", default=None, help="with --model: also model the kernels at this git revision"
    )
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter cannot generate GPU code")
    if args.model:
        return model_main(args)

    with torch.device("meta"):
        model = dcsd.resnet50_dcsd(num_classes=0).eval()
        images = torch.empty(args.batch, 3, 256, 128)
    with torch.no_grad():
        calls = record_op_calls(model, images)
    configs = TUNING_CONFIGS if args.configs == "all" else (DEFAULT_CONFIG,)

    header = ["kernel", "config", "arch", "specialisations", "registers", "spill B", "stack B"]
    header += ["shared B"]
    rows, spilled = [], []
    for kernel in KERNELS:
        for config in configs:
            for arch in args.archs:
                usages = [
                    compile_call(kernel, call, DTYPES[dtype], layout, config, arch)
                    for call in calls
                    for dtype in args.dtypes
                    for layout in LAYOUTS.values()
                ]
                row = [
                    kernel,
                    str(config),
                    f"sm_{arch}",
                    str(len(usages)),
                    *(
                        str(max(getattr(usage, field) for usage in usages))
                        for field in ("registers", "spill_bytes", "stack_bytes", "shared_bytes")
                    ),
                ]
                print(" | ".join(row), flush=True)
                rows.append(row)
                if any(usage.spills for usage in usages):
                    spilled.append(f"{kernel} {config} sm_{arch}")

    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    date = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    text = "\n".join(
        [
            "## Triton kernels compiled for sm_90 / sm_80 without a GPU",
            "",
            f"- `python bench/bench_compile.py --configs {args.configs}`; torch "
            f"{torch.__version__}, triton {triton.__version__}; {date}",
            f"- {len(calls)} op calls of ResNet50-DCSD (batch {args.batch}, 256x128) x dtypes "
            f"{', '.join(args.dtypes)} x NCHW / NHWC; largest value per row; registers per "
            "thread, spill (stores + loads) and stack bytes per thread, shared bytes per program",
            "",
            *table,
        ]
    )
    print("\n" + text)
    if args.out is not None:
        with args.out.open("a") as file:
            file.write("\n\n" + text + "\n")
    if spilled:
        print("register spills: " + "; ".join(spilled), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
