"""Every Triton kernel compiles for Hopper (sm_90) and Ampere (sm_80), here, without a GPU.

Each kernel is compiled for every specialisation of ResNet50-DCSD's op calls (recorded from the
model on meta tensors at batch 64, input 256x128; K=3: six distinct calls), in NCHW and
channels_last: calls whose launches bind to the same signature and specialisation attributes
(unit strides, 16-divisibility) compile once. A compile error or a register spill (ptxas'
report) fails. The
default run compiles bfloat16 with the default tile, the one every launch uses unless
``DCSD_AUTOTUNE=1``; ``DCSD_COMPILE_MATRIX=full`` (a CI step of its own: hundreds of compiles)
adds float16, float32 and every tile config the autotuner may pick for each kernel.
``python bench/bench_compile.py`` compiles every call of the model and prints the table.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

import dcsd
from dcsd.kernels.offline_compile import (
    KERNELS,
    OpCall,
    SassProfile,
    call_sass,
    call_specialization,
    compile_call,
    compile_generators,
    record_op_calls,
)
from dcsd.kernels.triton_decoupled_dwconv import DEFAULT_CONFIG, KERNEL_CONFIGS, TileConfig

ARCHS = (90, 80)
LAYOUTS = (torch.contiguous_format, torch.channels_last)
if os.environ.get("DCSD_COMPILE_MATRIX") == "full":
    KERNEL_TILES = [(kernel, config) for kernel in KERNELS for config in KERNEL_CONFIGS[kernel]]
    DTYPES = (torch.bfloat16, torch.float16, torch.float32)
else:
    KERNEL_TILES = [(kernel, KERNEL_CONFIGS[kernel][0]) for kernel in KERNELS]
    DTYPES = (torch.bfloat16,)


def resnet50_dcsd_op_calls() -> list[OpCall]:
    with torch.device("meta"):
        model = dcsd.resnet50_dcsd(num_classes=0).eval()
        images = torch.empty(64, 3, 256, 128)
    with torch.no_grad():
        return record_op_calls(model, images)


@pytest.fixture(scope="module")
def compiler() -> Iterator[ProcessPoolExecutor]:
    """Worker processes started without TRITON_INTERPRET (which tests/conftest.py sets on
    machines without CUDA): under the interpreter Triton cannot generate GPU code."""
    interpret = os.environ.pop("TRITON_INTERPRET", None)
    try:
        pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        for ready in [pool.submit(int) for _ in range(2)]:
            ready.result()
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def op_calls() -> list[OpCall]:
    return resnet50_dcsd_op_calls()


def test_recorded_calls_are_resnet50_dcsd_layers(op_calls: list[OpCall]) -> None:
    # layer1 (64ch 64x32), layer2.0 (stride 2), layer2.1-3, layer3.0 (stride 2), layer3.1-5, layer4.
    assert [(call.x_shape[1:], call.stride) for call in op_calls] == [
        ((64, 64, 32), 1),
        ((128, 64, 32), 2),
        ((128, 32, 16), 1),
        ((256, 32, 16), 2),
        ((256, 16, 8), 1),
        ((512, 16, 8), 1),
    ]
    assert {(call.kernel_size, call.padding, call.dilation) for call in op_calls} == {(3, 1, 1)}


def assert_no_spills(jobs: list, results: list, what: str) -> None:
    """Every compile succeeded (an error raises here, through result()) without a spill."""
    spilled = []
    for job, result in zip(jobs, results, strict=True):
        usage = result.result()
        assert usage.registers > 0
        if usage.spills:
            spilled.append(f"{job}: {usage}")
    assert not spilled, f"{what} spills:\n" + "\n".join(spilled)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda arch: f"sm{arch}")
@pytest.mark.parametrize(("kernel", "config"), KERNEL_TILES, ids=str)
def test_kernel_compiles_without_spills(
    kernel: str,
    config: TileConfig,
    arch: int,
    op_calls: list[OpCall],
    compiler: ProcessPoolExecutor,
) -> None:
    every_job = [
        (call, dtype, layout) for call in op_calls for dtype in DTYPES for layout in LAYOUTS
    ]
    keys = [compiler.submit(call_specialization, kernel, *job, config, arch) for job in every_job]
    distinct = {}
    for job, key in zip(every_job, keys, strict=True):
        distinct.setdefault(key.result(), job)
    jobs = list(distinct.values())
    # Stride 1 and 2, NCHW and NHWC at least; the 16x8 maps of layer3/layer4 add their own.
    assert len(jobs) >= 4 * len(DTYPES), [job[0] for job in jobs]
    results = [compiler.submit(compile_call, kernel, *job, config, arch) for job in jobs]
    assert_no_spills(jobs, results, f"{kernel} {config} on sm_{arch}")


@pytest.mark.parametrize("arch", ARCHS, ids=lambda arch: f"sm{arch}")
@pytest.mark.parametrize("name", ["mean_pointwise_forward", "mean_pointwise_grad_input"])
def test_generators_kernels_compile_without_spills(
    name: str, arch: int, op_calls: list[OpCall], compiler: ProcessPoolExecutor
) -> None:
    """mean_and_pointwise_conv's kernels, for the generators of every layer."""
    jobs = [(call, dtype, layout) for call in op_calls for dtype in DTYPES for layout in LAYOUTS]
    results = [compiler.submit(compile_generators, name, *job, arch) for job in jobs]
    assert_no_spills(jobs, results, f"{name} on sm_{arch}")


def test_compile_rejects_unknown_kernel(op_calls: list[OpCall]) -> None:
    with pytest.raises(ValueError, match="kernel must be one of"):
        compile_call("dgrad", op_calls[0], torch.bfloat16, LAYOUTS[0], DEFAULT_CONFIG, 90)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sass_profile_of_a_compiled_kernel(kernel: str, compiler: ProcessPoolExecutor) -> None:
    """The performance model reads the real compiler's SASS: its counts agree with plain text
    counts of the same listing (no runtime loop in a tiny launch with one channel group)."""
    call = OpCall((1, 16, 8, 8), (1, 9, 8, 8), 3, 1, 1, 1)
    job = (kernel, call, torch.bfloat16, LAYOUTS[0], TileConfig(16, 64, 4), 90)
    sass = compiler.submit(call_sass, *job).result()
    profile = SassProfile.from_sass(sass, loop_trips=1, element_bytes=2)
    listing = re.findall(r"^\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", sass, flags=re.M)
    code = [text for text in listing if text != "NOP"]
    # Every instruction but the trap branch after EXIT.
    assert profile.static == len(code) - 1
    assert profile.global_loads == sum(bool(re.search(r"\bLDG\.", text)) for text in code)
    assert profile.vector_loads <= profile.global_loads


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter is set only without CUDA")
def test_compile_under_the_interpreter_is_refused(op_calls: list[OpCall]) -> None:
    with pytest.raises(RuntimeError, match="without TRITON_INTERPRET=1"):
        compile_call("forward", op_calls[0], torch.bfloat16, LAYOUTS[0], DEFAULT_CONFIG, 90)
