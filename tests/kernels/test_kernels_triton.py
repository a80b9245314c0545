"""The Triton kernels against the plain-PyTorch oracle.

Without CUDA the kernels run on CPU tensors under TRITON_INTERPRET=1 (set by tests/conftest.py),
which executes every program in NumPy: shapes stay tiny, and small block sizes stand in for the
many-block tilings that real sizes produce. With CUDA the same tests run on the GPU, plus the
``cuda``-marked ones at realistic sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import triton
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsd.kernels import decoupled_dwconv2d, triton_decoupled_dwconv
from dcsd.kernels.reference import (
    decoupled_dwconv2d_backward_reference,
    decoupled_dwconv2d_reference,
)
from dcsd.kernels.shapes import output_size
from dcsd.kernels.triton_decoupled_dwconv import DEFAULT_CONFIG, TileConfig

# Relative tolerance per dtype, on elements (against the largest expected magnitude) and on the
# relative norm of the error; the oracle runs in float64 on the same (rounded) inputs, so what is
# left is accumulation order and the final rounding to the output dtype.
TOLERANCES = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 2e-2,
}

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Without CUDA the interpreter runs the kernels on CPU tensors; with it they must be on the GPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Case:
    batch: int
    channels: int
    height: int
    width: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    # Launch options; small blocks and channel groups force the multi-block paths and masks.
    block_c: int = 16
    block_p: int = 64
    channels_per_program: int | None = None

    @property
    def options(self) -> tuple[int, int, int, int]:
        return self.kernel_size, self.stride, self.padding, self.dilation

    def __str__(self) -> str:
        return (
            f"N{self.batch}C{self.channels}_{self.height}x{self.width}_K{self.kernel_size}"
            f"s{self.stride}p{self.padding}d{self.dilation}_b{self.block_c}x{self.block_p}"
            f"g{self.channels_per_program}"
        )


# Covering combinations instead of the full product (the interpreter is slow): every K in
# 1/3/5/7, strides 1-3, dilation 1-2, padding 0 / "same" / larger than the window, odd sizes,
# channel counts that no block size divides, and single- and multi-block launches.
CASES = [
    Case(2, 5, 9, 7, 3, 1, 1, 1),
    Case(1, 3, 9, 9, 3, 2, 1, 1, block_c=2, block_p=16, channels_per_program=2),
    Case(1, 5, 7, 9, 5, 1, 0, 1, block_c=4, block_p=16),
    Case(1, 3, 9, 9, 5, 2, 4, 2),
    Case(1, 6, 9, 8, 7, 1, 3, 1),
    Case(2, 3, 7, 7, 7, 2, 6, 2),
    Case(1, 5, 8, 9, 1, 2, 0, 1, block_c=2, block_p=16),
    Case(1, 5, 9, 7, 3, 3, 1, 1, block_c=2, block_p=8, channels_per_program=3),
    Case(1, 3, 5, 6, 3, 1, 3, 2, block_c=2, block_p=16),
    # Stride 3 whose padding keeps the input's size: not the dense (stride-1) addressing.
    Case(2, 2, 2, 2, 5, 3, 4, 1, block_c=2, block_p=16),
    # Dense addressing (stride 1, "same" size) with dilation 2: taps shifted by 2 rows/columns.
    Case(1, 3, 6, 5, 3, 1, 2, 2, block_c=2, block_p=16),
]
LOW_PRECISION_CASES = [CASES[0], CASES[1], CASES[5]]


def make_inputs(
    case: Case, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, spatial, channel and grad_out for ``case`` on DEVICE, drawn in float64, then rounded."""
    generator = torch.Generator().manual_seed(seed)
    height_out, width_out = output_size(case.height, case.width, *case.options)
    taps = case.kernel_size**2
    shapes = (
        (case.batch, case.channels, case.height, case.width),
        (case.batch, taps, height_out, width_out),
        (case.batch, case.channels, taps),
        (case.batch, case.channels, height_out, width_out),
    )
    return tuple(
        torch.randn(shape, generator=generator, dtype=torch.float64).to(DEVICE, dtype)
        for shape in shapes
    )


def assert_matches(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    layout: torch.memory_format = torch.contiguous_format,
) -> None:
    """``actual`` (in ``dtype`` and ``layout``) equals the float64 ``expected`` within the dtype's
    tolerance."""
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    assert actual.is_contiguous(memory_format=layout)
    tolerance = TOLERANCES[dtype]
    actual = actual.double()
    assert torch.isfinite(actual).all()
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance * scale)
    error = (actual - expected).norm().item()
    assert error <= tolerance * expected.norm().item()


def oracle(
    case: Case, x: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Float64 forward, explicit gradients and autograd gradients of the reference."""
    inputs = [t.double().requires_grad_() for t in (x, spatial, channel)]
    out = decoupled_dwconv2d_reference(*inputs, *case.options)
    autograd_grads = torch.autograd.grad(out, inputs, grad.double())
    explicit_grads = decoupled_dwconv2d_backward_reference(
        grad.double(), *(t.detach() for t in inputs), *case.options
    )
    return out.detach(), explicit_grads, autograd_grads


def run_triton(
    case: Case, x: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    config = TileConfig(case.block_c, case.block_p, DEFAULT_CONFIG.num_warps)
    out = triton_decoupled_dwconv.forward(x, spatial, channel, *case.options, config=config)
    grads = triton_decoupled_dwconv.backward(
        grad,
        x,
        spatial,
        channel,
        *case.options,
        config=config,
        channels_per_program=case.channels_per_program,
    )
    return out, grads


def check_case(case: Case, dtype: torch.dtype, seed: int = 0) -> None:
    x, spatial, channel, grad = make_inputs(case, dtype, seed)
    expected_out, explicit_grads, autograd_grads = oracle(case, x, spatial, channel, grad)
    out, grads = run_triton(case, x, spatial, channel, grad)
    assert_matches(out, expected_out, dtype)
    for actual, explicit, via_autograd in zip(grads, explicit_grads, autograd_grads, strict=True):
        assert_matches(actual, explicit, dtype)
        assert_matches(actual, via_autograd, dtype)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernels_match_reference_float32(case: Case) -> None:
    check_case(case, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=str)
def test_kernels_match_reference_low_precision(case: Case, dtype: torch.dtype) -> None:
    check_case(case, dtype)


def test_kernels_accumulate_float64_inputs_in_float64() -> None:
    check_case(CASES[1], torch.float64)


def test_every_output_element_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs and workspaces come from torch.empty: fill them with NaN first, none may survive."""
    case = CASES[7]
    x, spatial, channel, grad = make_inputs(case, torch.float32)
    expected_out, expected_grads, _ = oracle(case, x, spatial, channel, grad)
    empty = torch.empty

    def nan_filled_empty(*args, **kwargs):
        return empty(*args, **kwargs).fill_(math.nan)

    monkeypatch.setattr(torch, "empty", nan_filled_empty)
    out, grads = run_triton(case, x, spatial, channel, grad)
    monkeypatch.undo()
    assert_matches(out, expected_out, torch.float32)
    for actual, expected in zip(grads, expected_grads, strict=True):
        assert_matches(actual, expected, torch.float32)


@pytest.mark.parametrize(
    "config, name",
    [
        (TileConfig(3, 64, 8), "block_c"),
        (TileConfig(16, 48, 8), "block_p"),
        (TileConfig(0, 64, 8), "block_c"),
        (TileConfig(16, 64, 6), "num_warps"),
    ],
)
def test_config_sizes_must_be_powers_of_two(config: TileConfig, name: str) -> None:
    x, spatial, channel, grad = make_inputs(CASES[0], torch.float32)
    with pytest.raises(ValueError, match=f"config.{name} must be a power of two"):
        triton_decoupled_dwconv.forward(x, spatial, channel, *CASES[0].options, config=config)
    with pytest.raises(ValueError, match=f"config.{name} must be a power of two"):
        triton_decoupled_dwconv.backward(
            grad, x, spatial, channel, *CASES[0].options, config=config
        )


def test_launch_grid_limit_is_checked() -> None:
    x, spatial, channel = (
        torch.zeros(65536, 1, 1, 1),
        torch.zeros(65536, 1, 1, 1),
        torch.zeros(65536, 1, 1),
    )
    with pytest.raises(ValueError, match="at most 65535 samples"):
        triton_decoupled_dwconv.forward(x, spatial, channel, 1, 1, 0, 1)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kernel_size = draw(st.sampled_from([1, 3, 5, 7]))
    dilation = draw(st.integers(1, 2))
    span = dilation * (kernel_size - 1) + 1
    padding = draw(st.integers(0, span))
    # Keep at least one output row and column: H + 2p >= span.
    smallest = max(1, span - 2 * padding)
    block_c, block_p = draw(st.sampled_from([(16, 64), (2, 16)]))
    return Case(
        batch=draw(st.integers(1, 2)),
        channels=draw(st.integers(1, 6)),
        height=draw(st.integers(smallest, max(smallest, 8))),
        width=draw(st.integers(smallest, max(smallest, 8))),
        kernel_size=kernel_size,
        stride=draw(st.integers(1, 3)),
        padding=padding,
        dilation=dilation,
        block_c=block_c,
        block_p=block_p,
        channels_per_program=draw(st.sampled_from([None, 1, 4])),
    )


@settings(max_examples=15, deadline=None)
@given(
    case=cases(), dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 99)
)
def test_kernels_match_reference_on_random_shapes(
    case: Case, dtype: torch.dtype, seed: int
) -> None:
    check_case(case, dtype, seed)


def public_op_grads(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    grad: torch.Tensor,
    options: tuple[int, int, int, int],
    backend: str,
) -> tuple[torch.Tensor, ...]:
    inputs = [t.detach().requires_grad_() for t in (x, spatial, channel)]
    out = decoupled_dwconv2d(*inputs, *options, backend=backend)
    return (out.detach(), *torch.autograd.grad(out, inputs, grad))


def contiguous(x: torch.Tensor) -> torch.Tensor:
    return x


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def transposed(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a (N, C, H, W) view whose last two dims are swapped in memory."""
    return x.transpose(2, 3).contiguous().transpose(2, 3)


def every_other_channel(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a view that skips every other channel of a larger tensor."""
    wide = x.new_zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])
    wide[:, ::2] = x
    return wide[:, ::2]


@pytest.mark.parametrize(
    "layout",
    [contiguous, channels_last, transposed, every_other_channel],
    ids=lambda layout: layout.__name__,
)
def test_public_op_triton_matches_reference_backend(layout) -> None:
    """Forward and all three gradients, with x, spatial and grad_out in the given memory layout."""
    case = CASES[1]
    x, spatial, channel, grad = make_inputs(case, torch.float32)
    reference = public_op_grads(x, spatial, channel, grad, case.options, "reference")
    x, spatial, grad = layout(x), layout(spatial), layout(grad)
    assert x.is_contiguous() == (layout is contiguous)
    triton_results = public_op_grads(x, spatial, channel, grad, case.options, "triton")
    # Results come back channels_last for channels_last inputs, else contiguous.
    expected_format = torch.channels_last if layout is channels_last else torch.contiguous_format
    formats = (expected_format, expected_format, expected_format, torch.contiguous_format)
    for actual, expected, memory_format in zip(triton_results, reference, formats, strict=True):
        assert_matches(actual, expected.double(), torch.float32, memory_format)


def no_copies(*args, **kwargs):
    raise AssertionError("the Triton path copied a tensor with .contiguous()")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[7]], ids=str)
def test_kernels_work_in_the_inputs_memory_format(
    case: Case, layout: torch.memory_format, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NCHW or NHWC x, spatial and grad_out (and channel with its taps outermost) are read in
    place, without a .contiguous() copy; out, dx and dspatial come back in their inputs' layout."""
    x, spatial, channel, grad = make_inputs(case, dtype)
    expected_out, expected_grads, _ = oracle(case, x, spatial, channel, grad)
    x, spatial, grad = (t.contiguous(memory_format=layout) for t in (x, spatial, grad))
    channel = channel.transpose(1, 2).contiguous().transpose(1, 2)
    monkeypatch.setattr(torch.Tensor, "contiguous", no_copies)
    out, grads = run_triton(case, x, spatial, channel, grad)
    monkeypatch.undo()
    assert_matches(out, expected_out, dtype, layout)
    formats = (layout, layout, torch.contiguous_format)
    for actual, expected, memory_format in zip(grads, expected_grads, formats, strict=True):
        assert_matches(actual, expected, dtype, memory_format)


def test_public_op_triton_matches_reference_backend_bfloat16() -> None:
    case = CASES[0]
    inputs = make_inputs(case, torch.bfloat16)
    expected = public_op_grads(*[t.double() for t in inputs], case.options, "reference")
    actual = public_op_grads(*inputs, case.options, "triton")
    for result, oracle_result in zip(actual, expected, strict=True):
        assert_matches(result, oracle_result, torch.bfloat16)


# ResNet50-DCSD's first layer2 conv (stride 2) and a layer3 conv at batch 8, default launch
# options: hundreds of programs, and the layer3 shape splits its channels into groups.
GPU_CASES = [Case(8, 128, 64, 32, 3, 2, 1, 1), Case(8, 256, 16, 8, 3, 1, 1, 1)]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_kernels_match_reference_on_gpu(case: Case, dtype: torch.dtype) -> None:
    inputs = make_inputs(case, dtype)
    expected = public_op_grads(*[t.double() for t in inputs], case.options, "reference")
    actual = public_op_grads(*inputs, case.options, "triton")
    for result, oracle_result in zip(actual, expected, strict=True):
        assert_matches(result, oracle_result, dtype)


def test_int32_offset_limit_is_checked() -> None:
    # A view whose one sample spans more than 2**31 elements of memory (meta: nothing allocated).
    x = torch.empty_strided((1, 2, 1, 1), (2**31, 2**31, 1, 1), device="meta")
    spatial, channel = torch.empty(1, 1, 1, 1, device="meta"), torch.empty(1, 2, 1, device="meta")
    with pytest.raises(ValueError, match="one sample of x spans 2147483649 elements"):
        triton_decoupled_dwconv.forward(x, spatial, channel, 1, 1, 0, 1)


TUNED = {
    "forward": "_forward_tuned",
    "grad_input": "_grad_input_tuned",
    "grad_filters": "_grad_filters_tuned",
}


@pytest.mark.parametrize("favourite", range(len(triton_decoupled_dwconv.TUNING_CONFIGS)))
def test_autotuning_over_every_config_picks_and_sizes_correctly(
    favourite: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path DCSD_AUTOTUNE=1 takes on a GPU: each kernel's configs offered, partial sums
    sized for the finest tiling, the finishing sums cut to the tiling that ran. The benchmark is
    replaced by a ranking that makes each kernel's config number ``favourite`` win (timing needs a
    GPU)."""
    module = triton_decoupled_dwconv
    configs = module.KERNEL_CONFIGS
    monkeypatch.setattr(module, "_AUTOTUNE", True)
    for name, attribute in TUNED.items():
        assert module.active_configs(name) == configs[name]
        tuned = module._autotune(getattr(module, attribute).fn, name)
        monkeypatch.setattr(module, attribute, tuned)
    favourites = {choices[favourite] for choices in configs.values()}

    def ranked_bench(self, *args, config, **kwargs):
        tile = TileConfig(config.kwargs["BLOCK_C"], config.kwargs["BLOCK_P"], config.num_warps)
        return [0.0 if tile in favourites else 1.0]

    monkeypatch.setattr(triton.runtime.autotuner.Autotuner, "_bench", ranked_bench)
    case = Case(2, 20, 9, 7, 3, 1, 1, 1)  # more channels and positions than one tile of each
    x, spatial, channel, grad = make_inputs(case, torch.float32)
    expected_out, expected_grads, _ = oracle(case, x, spatial, channel, grad)
    out = module.forward(x, spatial, channel, *case.options)
    grads = module.backward(grad, x, spatial, channel, *case.options)
    for name, attribute in TUNED.items():
        best = getattr(module, attribute).best_config
        tile = TileConfig(best.kwargs["BLOCK_C"], best.kwargs["BLOCK_P"], best.num_warps)
        assert tile == configs[name][favourite]
    assert_matches(out, expected_out, torch.float32)
    for actual, expected in zip(grads, expected_grads, strict=True):
        assert_matches(actual, expected, torch.float32)


def test_a_capture_that_would_autotune_is_refused_until_a_warm_up_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DCSD_AUTOTUNE=1 under CUDA graph capture: the first call of a shape would time every
    config inside the capture, so it is refused; after one warm-up call (the tuner's own cache
    holds the shape) the same call runs. Capture is simulated (it needs a GPU)."""
    module = triton_decoupled_dwconv
    monkeypatch.setattr(module, "_AUTOTUNE", True)
    tuned = module._autotune(module._forward_tuned.fn, "forward")
    monkeypatch.setattr(module, "_forward_tuned", tuned)
    monkeypatch.setattr(
        triton.runtime.autotuner.Autotuner,
        "_bench",
        lambda self, *args, config, **kwargs: [float(config.num_warps)],
    )
    case = Case(2, 20, 9, 7, 3, 1, 1, 1)
    x, spatial, channel, _ = make_inputs(case, torch.float32)
    monkeypatch.setattr(module, "_capturing", lambda tensor: True)
    with pytest.raises(RuntimeError, match="inside CUDA graph capture.*warm-up step"):
        module.forward(x, spatial, channel, *case.options)
    assert not tuned.cache  # refused before anything ran
    monkeypatch.setattr(module, "_capturing", lambda tensor: False)
    warm = module.forward(x, spatial, channel, *case.options)  # the warm-up step tunes
    assert len(tuned.cache) == 1
    monkeypatch.setattr(module, "_capturing", lambda tensor: True)
    assert torch.equal(module.forward(x, spatial, channel, *case.options), warm)
    other = make_inputs(Case(2, 20, 9, 9, 3, 1, 1, 1), torch.float32)[:3]
    with pytest.raises(RuntimeError, match="inside CUDA graph capture"):
        module.forward(*other, *case.options)  # a new shape would tune again


@pytest.mark.cuda
@requires_cuda
def test_the_op_replays_in_a_cuda_graph() -> None:
    """Forward and backward captured in a CUDA graph after a warm-up step, replayed on new
    inputs copied into the captured tensors, equal the eager op."""
    case = GPU_CASES[1]
    inputs = make_inputs(case, torch.float32)
    static = [t.detach().requires_grad_(i < 3) for i, t in enumerate(inputs)]
    x, spatial, channel, grad = static

    def step():
        out = decoupled_dwconv2d(x, spatial, channel, *case.options, backend="triton")
        return (out, *torch.autograd.grad(out, (x, spatial, channel), grad))

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm-up: compiles (and tunes with DCSD_AUTOTUNE=1) outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    fresh = make_inputs(case, torch.float32, seed=1)
    with torch.no_grad():
        for target, source in zip(static, fresh, strict=True):
            target.copy_(source)
    graph.replay()
    torch.cuda.synchronize()
    expected = step()
    for actual, wanted in zip(captured, expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=0, atol=0)
