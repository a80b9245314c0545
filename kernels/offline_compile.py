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
from types import ModuleType

import torch
import triton
from torch.utils._python_dispatch import TorchDispatchMode
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

from . import triton_decoupled_dwconv as kernels
from . import triton_mean_pointwise

_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
# One SASS instruction as cuobjdump prints it: /*address*/ [@[!]Pn] OPCODE[.MODIFIERS] operands ;
_SASS_LINE = re.compile(
    r"^\s*/\*(?P<address>[0-9a-f]{4,})\*/\s+(?P<predicate>@!?U?P\w+\s+)?"
    r"(?P<opcode>[A-Z0-9_]+)(?P<modifiers>(?:\.[A-Z0-9_]+)*)\s*(?P<operands>[^;]*);"
)
_BRANCH_TARGET = re.compile(r"0x([0-9a-f]+)")


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


@dataclass(frozen=True)
class SassInstruction:
    address: int
    opcode: str  # e.g. "LDG"
    modifiers: str  # e.g. ".E.128"
    predicated: bool
    branch_target: int | None  # the address a BRA jumps to


def parse_sass(text: str) -> list[SassInstruction]:
    """The instructions of ``cuobjdump -sass`` output (one kernel), NOPs left out."""
    instructions = []
    for line in text.splitlines():
        match = _SASS_LINE.match(line)
        if match is None or match["opcode"] == "NOP":
            continue
        target = None
        if match["opcode"] == "BRA":
            found = _BRANCH_TARGET.search(match["operands"])
            target = int(found.group(1), 16) if found else None
        instructions.append(
            SassInstruction(
                int(match["address"], 16),
                match["opcode"],
                match["modifiers"],
                match["predicate"] is not None,
                target,
            )
        )
    return instructions


@dataclass(frozen=True)
class SassProfile:
    """Instructions one thread issues in one program, from the SASS and the programs' loop trip
    count: an instruction inside ``k`` nested loops (backward branches) counts ``trips**k`` times;
    branches skipped over and predicated-off instructions count as issued (an upper bound)."""

    static: int
    issued: float
    loops: int
    global_loads: float  # LDG issued
    vector_loads: float  # LDG issued that load more than one element
    barriers: float  # BAR issued
    shuffles: float  # SHFL issued

    @classmethod
    def from_sass(cls, text: str, loop_trips: int, element_bytes: int) -> SassProfile:
        instructions = parse_sass(text)
        loops = [
            (i.branch_target, i.address)
            for i in instructions
            if i.branch_target is not None and i.branch_target < i.address
        ]
        counts = {"all": 0.0, "LDG": 0.0, "vector": 0.0, "BAR": 0.0, "SHFL": 0.0}
        for instruction in instructions:
            if instruction.branch_target == instruction.address:
                continue  # the trap loop after EXIT
            depth = sum(start <= instruction.address <= end for start, end in loops)
            weight = float(loop_trips) ** depth
            counts["all"] += weight
            if instruction.opcode in ("BAR", "SHFL"):
                counts[instruction.opcode] += weight
            if instruction.opcode == "LDG":
                counts["LDG"] += weight
                if load_bits(instruction.modifiers) > 8 * element_bytes:
                    counts["vector"] += weight
        return cls(
            static=sum(1 for i in instructions if i.branch_target != i.address),
            issued=counts["all"],
            loops=len(loops),
            global_loads=counts["LDG"],
            vector_loads=counts["vector"],
            barriers=counts["BAR"],
            shuffles=counts["SHFL"],
        )


def load_bits(modifiers: str) -> int:
    """Bits one thread's LDG with these modifiers loads (``.E.U16``: 16; ``.E``: 32; ``.E.128``)."""
    for bits in ("128", "64", "U16", "S16", "U8", "S8"):
        if f".{bits}" in modifiers:
            return {"U16": 16, "S16": 16, "U8": 8, "S8": 8}.get(bits) or int(bits)
    return 32


@dataclass(frozen=True)
class Compiled:
    usage: ResourceUsage
    sass: str


def plan(
    call: OpCall,
    dtype: torch.dtype,
    layout: torch.memory_format,
    config: kernels.TileConfig,
    module: ModuleType = kernels,
) -> list:
    """``module.launch_plan`` (the launches of one forward and backward) for ``call`` on meta
    tensors; ``module`` is the Triton kernel module (another revision of it for comparisons)."""
    options = (call.kernel_size, call.stride, call.padding, call.dilation)
    return module.launch_plan(*call.inputs(dtype, layout), *options, config)


def kernel_names(module: ModuleType = kernels) -> tuple[str, ...]:
    """The Triton kernels of one forward and backward, in launch order."""
    call = OpCall((1, 1, 3, 3), (1, 9, 3, 3), 3, 1, 1, 1)
    launches = plan(call, torch.float32, torch.contiguous_format, module.DEFAULT_CONFIG, module)
    return tuple(launch.name for launch in launches if launch.kernel is not None)


def _bind(launch, arch: int) -> tuple:
    """Bind a launch as Triton's launcher would: (fn, signature, constexprs, attrs, options,
    target), where the signature and attrs carry the specialisation (unit strides,
    16-divisibility)."""
    fn = launch.kernel
    if not isinstance(fn, JITFunction):
        # Under the interpreter triton.language's own helpers (tl.cdiv, tl.sum) are interpreted
        # functions too, which code generation cannot call.
        raise RuntimeError(
            "compiling for a GPU target needs a process started without TRITON_INTERPRET=1"
        )
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.constants)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, launch.constants, bound_args, specialization, options
    )
    return fn, signature, constexprs, attrs, options, target


def _key(bound: tuple) -> tuple:
    fn, signature, constexprs, attrs, options, target = bound
    source = fn.fn.__code__.co_filename
    return (source, fn.__name__, target.arch, repr((signature, constexprs, attrs, options)))


def compile_launch(launch, arch: int) -> Compiled:
    """Compile a Triton launch of :func:`plan` for sm_``arch``: resource usage and SASS.

    Raises:
        triton.CompilationError / RuntimeError: the kernel does not compile for that target.
    """
    bound = _bind(launch, arch)
    key = _key(bound)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(*bound)
    return _COMPILED[key]


# Layers of one model share most specialisations: compile and inspect each one once per process.
_COMPILED: dict[tuple, Compiled] = {}


def _compile(fn, signature, constexprs, attrs, options, target: GPUTarget) -> Compiled:
    source = ASTSource(fn, signature, constexprs, attrs)
    compiled = triton.compile(source, target=target, options=options.__dict__)
    tools = Path(get_ptxas(target.arch).path)
    with tempfile.TemporaryDirectory() as folder:
        cubin, ptx = Path(folder) / "kernel.cubin", Path(folder) / "kernel.ptx"
        cubin.write_bytes(compiled.asm["cubin"])
        ptx.write_text(compiled.asm["ptx"])
        cuobjdump = tools.with_name("cuobjdump")
        usage = _run([cuobjdump, "--dump-resource-usage", cubin])
        sass = _run([cuobjdump, "-sass", cubin])
        # ptxas' verbose report of the same PTX names spills (a stack frame alone is not one).
        arch_name = sm_arch_from_capability(target.arch)
        report = _run([tools, "-v", f"--gpu-name={arch_name}", ptx, "-o", cubin.with_suffix(".o")])
    match, spills = _USAGE.search(usage), _SPILLS.search(report)
    if match is None or spills is None:
        raise RuntimeError(f"no resource usage for {fn.__name__} in:\n{usage}\n{report}")
    registers, stack, shared, local = (int(value) for value in match.groups())
    spill_bytes = int(spills.group(1)) + int(spills.group(2))
    usage = ResourceUsage(registers, stack, local, spill_bytes, shared + compiled.metadata.shared)
    return Compiled(usage, sass)


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


def _call_launch(kernel: str, call: OpCall, dtype, layout, config):
    launches = {launch.name: launch for launch in plan(call, dtype, layout, config)}
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return launches[kernel]


def compile_call(
    kernel: str,
    call: OpCall,
    dtype: torch.dtype,
    layout: torch.memory_format,
    config: kernels.TileConfig,
    arch: int,
) -> ResourceUsage:
    """Compile ``kernel`` (one of :data:`KERNELS`) for sm_``arch`` as the launch for ``call`` in
    ``dtype`` and ``layout`` with ``config`` would (picklable arguments: runs in a worker process
    as well), and return the cubin's resource usage.

    Raises:
        ValueError: unknown kernel name.
    """
    return compile_launch(_call_launch(kernel, call, dtype, layout, config), arch).usage


def call_sass(
    kernel: str,
    call: OpCall,
    dtype: torch.dtype,
    layout: torch.memory_format,
    config: kernels.TileConfig,
    arch: int,
) -> str:
    """As :func:`compile_call`, but return the SASS (``cuobjdump -sass``)."""
    return compile_launch(_call_launch(kernel, call, dtype, layout, config), arch).sass


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
    return repr(_key(_bind(_call_launch(kernel, call, dtype, layout, config), arch)))


def generators_launches(call: OpCall, dtype: torch.dtype, layout: torch.memory_format) -> dict:
    """``mean_and_pointwise_conv``'s launches, forward and input gradient, for the generators
    of the layer that makes ``call`` (their 1x1 convolution has K*K outputs and the op's stride;
    the op's dx passed through, as in training), by name."""
    x, spatial, _ = call.inputs(dtype, layout)
    batch, channels = x.shape[:2]
    meta = {"dtype": dtype, "device": "meta"}
    weight = torch.empty(spatial.shape[1], channels, **meta)
    bias = torch.empty(spatial.shape[1], **meta)
    blocks = triton.cdiv(x.shape[2] * x.shape[3], triton_mean_pointwise.FORWARD_BLOCK_P)
    sum_part = torch.empty(batch, blocks, channels, dtype=torch.float32, device="meta")
    launches = [
        triton_mean_pointwise.forward_launch(
            x, weight, bias, call.stride, torch.empty_like(spatial), sum_part
        ),
        triton_mean_pointwise.grad_input_launch(
            torch.empty(batch, channels, **meta),
            torch.empty_like(spatial),
            torch.empty_like(x),
            x,
            weight,
            call.stride,
            torch.empty_like(x),
        ),
    ]
    return {launch.name: launch for launch in launches}


def compile_generators(
    name: str, call: OpCall, dtype: torch.dtype, layout: torch.memory_format, arch: int
) -> ResourceUsage:
    """As :func:`compile_call`, for the launch ``name`` of :func:`generators_launches`."""
    return compile_launch(generators_launches(call, dtype, layout)[name], arch).usage


KERNELS = kernel_names()


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
