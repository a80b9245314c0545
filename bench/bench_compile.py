"""Registers, spills and shared memory of every Triton kernel, compiled for sm_90 and sm_80 here.

No GPU needed: the kernels are compiled for a named target (see ``dcsd.kernels.offline_compile``)
with the specialisations ResNet50-DCSD's op calls produce (recorded from the model on meta
tensors, batch 64, input 256x128), in NCHW and channels_last, for each tile config. One row per
(kernel, config, arch): the largest value over the model's specialisations, dtypes and layouts.

    python bench/bench_compile.py                        # default tile, bf16/fp16/fp32
    python bench/bench_compile.py --configs all          # every config the autotuner may pick
    python bench/bench_compile.py --configs all --out bench/RESULTS.md

Exits with status 1 if any kernel spills registers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch
import triton

import dcsd
from dcsd.kernels.offline_compile import KERNELS, compile_call, record_op_calls
from dcsd.kernels.triton_decoupled_dwconv import DEFAULT_CONFIG, TUNING_CONFIGS

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", choices=["default", "all"], default="default")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=sorted(DTYPES))
    parser.add_argument("--archs", nargs="+", type=int, default=[90, 80])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter cannot generate GPU code")

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
