"""Compile the op's Triton kernels for a named NVIDIA GPU on a machine without one.

``triton.compile`` builds for a target given by name (``GPUTarget("cuda", 90, 32)`` for Hopper),
so compile errors and register spills show up before any GPU is at hand. The specialisation is
the one a real launch would compile: the arguments the launchers build for the given tensors
(meta tensors are enough) go through Triton's own binder, so pointer dtypes, integers equal to 1
(unit strides) and 16-divisibility come out as on a device. Resource usage is read from the
compiled cubin with the ``cuobjdump`` that ships with Triton, and spills from ``ptxas -v`` on
the same PTX.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from torch.utils._python_dispatch import TorchDispatchMode
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

from . import triton_decoupled_dwconv as kernels
from .shapes import memory_format

KERNELS = ("forward", "grad_input", "grad_filters")
_TUNED = {
    "forward": kernels._forward_tuned,
    "grad_input": kernels._grad_input_tuned,
    "grad_filters": kernels._grad_filters_tuned,
}
_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def _run(command: list) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stderr}")
    return result.stdout + result.stderr


@dataclass(frozen=True)
class ResourceUsage:
    """What one compiled kernel needs per thread and per program."""

    registers: int  # per thread
    stack_bytes: int  # per thread stack frame
    local_bytes: int  # per thread local memory
    spill_bytes: int  # per thread register spill stores + loads, as ptxas reports them
    shared_bytes: int  # per program: static + the dynamic shared memory Triton launches with

    @property
    def spills(self) -> bool:
        return self.spill_bytes > 0


def launch_arguments(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    config: kernels.TileConfig,
) -> dict[str, tuple[tuple, dict]]:
    """Runtime arguments and compile-time constants of each kernel for one call of the op.

    ``grad_out`` and the results are allocated as the launchers allocate them (in x's memory
    format); tensors may live on the meta device.
    """
    batch, channels, height, width = x.shape
    height_out, width_out = spatial.shape[2:]
    taps = kernel_size * kernel_size
    like_x = {"dtype": x.dtype, "device": x.device, "memory_format": memory_format(x)}
    out = torch.empty(batch, channels, height_out, width_out, **like_x)
    grad_x = torch.empty(batch, channels, height, width, **like_x)
    blocks, groups = kernels._filter_grad_grid(
        batch, channels, height_out * width_out, config, None
    )
    workspace = {"dtype": torch.float32, "device": x.device}
    grad_spatial_part = torch.empty(batch, groups, taps, height_out * width_out, **workspace)
    grad_channel_part = torch.empty(batch, blocks, channels, taps, **workspace)
    constants = {
        **kernels._constants(kernel_size, stride, padding, dilation, x.dtype),
        "BLOCK_C": config.block_c,
        "BLOCK_P": config.block_p,
        "num_warps": config.num_warps,
        "maxnreg": config.max_registers,
    }
    grad_input_args, grad_filters_args = kernels.backward_launch_args(
        out, x, spatial, channel, grad_x, grad_spatial_part, grad_channel_part
    )
    return {
        "forward": (kernels.forward_launch_args(x, spatial, channel, out), constants),
        "grad_input": (grad_input_args, constants),
        "grad_filters": (grad_filters_args, constants),
    }


def _jit_function(name: str) -> JITFunction:
    fn = _TUNED[name].fn
    if not isinstance(fn, JITFunction):
        # Under the interpreter triton.language's own helpers (tl.cdiv, tl.sum) are interpreted
        # functions too, which code generation cannot call.
        raise RuntimeError(
            "compiling for a GPU target needs a process started without TRITON_INTERPRET=1"
        )
    return fn


def _bind(name: str, args: tuple, constants: dict, arch: int) -> tuple:
    """Bind a launch as Triton's launcher would: (fn, signature, constexprs, attrs, options,
    target), where the signature and attrs carry the specialisation (unit strides,
    16-divisibility)."""
    if name not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {name!r}")
    fn = _jit_function(name)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **constants)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, constants, bound_args, specialization, options
    )
    return fn, signature, constexprs, attrs, options, target


def _key(name: str, arch: int, bound: tuple) -> tuple:
    _, signature, constexprs, attrs, options, _ = bound
    return (name, arch, repr((signature, constexprs, attrs, options)))


def compile_kernel(name: str, args: tuple, constants: dict, arch: int) -> ResourceUsage:
    """Compile kernel ``name`` (one of :data:`KERNELS`) for sm_``arch`` as a launch with ``args``
    and ``constants`` would, and return the cubin's resource usage.

    Raises:
        ValueError: unknown kernel name.
        triton.CompilationError / RuntimeError: the kernel does not compile for that target.
    """
    bound = _bind(name, args, constants, arch)
    key = _key(name, arch, bound)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(*bound)
    return _COMPILED[key]


# Layers of one model share most specialisations: compile and inspect each one once per process.
_COMPILED: dict[tuple, ResourceUsage] = {}


def _compile(fn, signature, constexprs, attrs, options, target: GPUTarget) -> ResourceUsage:
    source = ASTSource(fn, signature, constexprs, attrs)
    compiled = triton.compile(source, target=target, options=options.__dict__)
    tools = Path(get_ptxas(target.arch).path)
    with tempfile.TemporaryDirectory() as folder:
        cubin, ptx = Path(folder) / "kernel.cubin", Path(folder) / "kernel.ptx"
        cubin.write_bytes(compiled.asm["cubin"])
        ptx.write_text(compiled.asm["ptx"])
        usage = _run([tools.with_name("cuobjdump"), "--dump-resource-usage", cubin])
        # ptxas' verbose report of the same PTX names spills (a stack frame alone is not one).
        arch_name = sm_arch_from_capability(target.arch)
        report = _run([tools, "-v", f"--gpu-name={arch_name}", ptx, "-o", cubin.with_suffix(".o")])
    match, spills = _USAGE.search(usage), _SPILLS.search(report)
    if match is None or spills is None:
        raise RuntimeError(f"no resource usage for {fn.__name__} in:\n{usage}\n{report}")
    registers, stack, shared, local = (int(value) for value in match.groups())
    spill_bytes = int(spills.group(1)) + int(spills.group(2))
    return ResourceUsage(registers, stack, local, spill_bytes, shared + compiled.metadata.shared)


@dataclass(frozen=True)
class OpCall:
    """The shapes and options of one call of the op (enough to rebuild its launches)."""

    x_shape: tuple[int, int, int, int]
    spatial_shape: tuple[int, int, int, int]
    kernel_size: int
    stride: int
    padding: int
    dilation: int

    def inputs(
        self, dtype: torch.dtype, layout: torch.memory_format
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Meta tensors x, spatial (both in ``layout``) and channel (contiguous) for this call."""
        batch, channels = self.x_shape[:2]
        taps = self.kernel_size * self.kernel_size
        meta = {"dtype": dtype, "device": "meta"}
        return (
            torch.empty(self.x_shape, **meta, memory_format=layout),
            torch.empty(self.spatial_shape, **meta, memory_format=layout),
            torch.empty(batch, channels, taps, **meta),
        )


def compile_call(
    kernel: str,
    call: OpCall,
    dtype: torch.dtype,
    layout: torch.memory_format,
    config: kernels.TileConfig,
    arch: int,
) -> ResourceUsage:
    """Compile ``kernel`` for sm_``arch`` as the launch for ``call`` in ``dtype`` and ``layout``
    with ``config`` would (picklable arguments: runs in a worker process as well)."""
    return compile_kernel(kernel, *_call_launch(kernel, call, dtype, layout, config), arch)


def _call_launch(kernel: str, call: OpCall, dtype, layout, config) -> tuple[tuple, dict]:
    options = (call.kernel_size, call.stride, call.padding, call.dilation)
    return launch_arguments(*call.inputs(dtype, layout), *options, config)[kernel]


def call_specialization(
    kernel: str,
    call: OpCall,
    dtype: torch.dtype,
    layout: torch.memory_format,
    config: kernels.TileConfig,
    arch: int,
) -> str:
    """What decides the binary :func:`compile_call` would build (kernel, arch, signature,
    constants, specialisation attributes, options), without compiling: calls with equal values
    compile to the same kernel."""
    args, constants = _call_launch(kernel, call, dtype, layout, config)
    return repr(_key(kernel, arch, _bind(kernel, args, constants, arch)))


class _OpCallRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[OpCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.dcsd.decoupled_dwconv2d.default:
            x, spatial, _, kernel_size, stride, padding, dilation = args
            call = OpCall(
                tuple(x.shape), tuple(spatial.shape), kernel_size, stride, padding, dilation
            )
            if call not in self.calls:
                self.calls.append(call)
        return func(*args, **(kwargs or {}))


def record_op_calls(fn: Callable[..., object], *args: object) -> list[OpCall]:
    """The distinct calls of the op (through ``backend="auto"``) that ``fn(*args)`` makes, in
    order; run it on meta tensors to record a large model's calls in no time."""
    with _OpCallRecorder() as recorder:
        fn(*args)
    return recorder.calls
