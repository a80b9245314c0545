"""The public op on its CPU paths: the reference against independent oracles, the custom-op
registration (per-device kernels, fake, autograd, compile, FLOP count) and argument checks."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dcsd.kernels import (
    decoupled_dwconv2d,
    decoupled_dwconv2d_backward_reference,
    decoupled_dwconv2d_reference,
    output_size,
)

# (N, C, H, W, K, stride, dilation, padding)
SHAPES = [
    (1, 3, 7, 5, 3, 1, 1, None),
    (2, 5, 9, 8, 3, 2, 1, None),
    (2, 4, 6, 7, 1, 1, 1, None),
    (1, 3, 11, 9, 5, 1, 2, None),
    (2, 2, 8, 9, 7, 2, 1, None),
    (1, 3, 9, 9, 3, 2, 2, 0),
    (2, 3, 5, 6, 5, 1, 1, 1),
]


def make_inputs(n, c, h, w, k, stride, dilation, padding, dtype=torch.float64, seed=0):
    if padding is None:
        padding = dilation * (k - 1) // 2
    ho, wo = output_size(h, w, k, stride, padding, dilation)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    spatial = torch.randn(n, k * k, ho, wo, generator=gen, dtype=dtype)
    channel = torch.randn(n, c, k * k, generator=gen, dtype=dtype)
    return x, spatial, channel, padding


def unfold_oracle(x, spatial, channel, k, stride, padding, dilation):
    """The op written with F.unfold: the K*K-times larger tensor the reference avoids."""
    n, c = x.shape[:2]
    ho, wo = spatial.shape[2:]
    cols = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)
    cols = cols.view(n, c, k * k, ho * wo)
    weight = spatial.view(n, 1, k * k, ho * wo) * channel.unsqueeze(-1)
    return (cols * weight).sum(2).view(n, c, ho, wo)


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_unfold_oracle(shape):
    n, c, h, w, k, stride, dilation, padding = shape
    x, spatial, channel, padding = make_inputs(*shape)
    out = decoupled_dwconv2d_reference(x, spatial, channel, k, stride, padding, dilation)
    expected = unfold_oracle(x, spatial, channel, k, stride, padding, dilation)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_constant_filters_equal_depthwise_conv2d():
    x, spatial, channel, padding = make_inputs(2, 4, 9, 7, 3, 2, 1, None)
    weight = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    out = decoupled_dwconv2d(
        x, torch.ones_like(spatial), weight.view(1, 4, 9).expand(2, 4, 9), 3, stride=2
    )
    expected = F.conv2d(x, weight, stride=2, padding=padding, groups=4)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_explicit_backward_matches_autograd(shape):
    n, c, h, w, k, stride, dilation, padding = shape
    x, spatial, channel, padding = make_inputs(*shape)
    inputs = [t.requires_grad_() for t in (x, spatial, channel)]
    out = decoupled_dwconv2d_reference(*inputs, k, stride, padding, dilation)
    grad_out = torch.randn_like(out)
    expected = torch.autograd.grad(out, inputs, grad_out)
    got = decoupled_dwconv2d_backward_reference(
        grad_out, x.detach(), spatial.detach(), channel.detach(), k, stride, padding, dilation
    )
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_gradcheck_float64(backend):
    x, spatial, channel, _ = make_inputs(1, 2, 5, 4, 3, 2, 1, None)
    inputs = tuple(t.requires_grad_() for t in (x, spatial, channel))
    assert torch.autograd.gradcheck(
        lambda a, b, c: decoupled_dwconv2d(a, b, c, 3, stride=2, backend=backend), inputs
    )


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_custom_op_matches_reference_forward_and_backward(shape):
    n, c, h, w, k, stride, dilation, padding = shape
    x, spatial, channel, padding = make_inputs(*shape, dtype=torch.float32)
    grads = {}
    for backend in ("auto", "reference"):
        inputs = [t.clone().requires_grad_() for t in (x, spatial, channel)]
        out = decoupled_dwconv2d(*inputs, k, stride, padding, dilation, backend=backend)
        out.backward(torch.ones_like(out))
        grads[backend] = (out.detach(), *(t.grad for t in inputs))
    for a, b in zip(grads["auto"], grads["reference"], strict=True):
        torch.testing.assert_close(a, b)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_custom_ops(device):
    """On CUDA tensors this checks the op's CUDA kernel (Triton) against its registrations."""
    x, spatial, channel, padding = make_inputs(2, 3, 6, 5, 3, 1, 1, None, dtype=torch.float32)
    x, spatial, channel = (t.to(device) for t in (x, spatial, channel))
    inputs = [t.requires_grad_() for t in (x, spatial, channel)]
    torch.library.opcheck(torch.ops.dcsd.decoupled_dwconv2d.default, (*inputs, 3, 1, padding, 1))
    grad_out = torch.randn(2, 3, 6, 5, device=device)
    torch.library.opcheck(
        torch.ops.dcsd.decoupled_dwconv2d_backward.default,
        (grad_out, x.detach(), spatial.detach(), channel.detach(), 3, 1, padding, 1),
    )


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)]
)
def test_low_precision_accumulates_in_float32(dtype, tolerance):
    x, spatial, channel, padding = make_inputs(2, 8, 12, 10, 5, 1, 1, None)
    expected = decoupled_dwconv2d_reference(x, spatial, channel, 5)
    low = [t.to(dtype) for t in (x, spatial, channel)]
    out = decoupled_dwconv2d(*low, 5)
    assert out.dtype == dtype
    rounded = decoupled_dwconv2d_reference(*(t.double() for t in low), 5)
    error = (out.double() - rounded).norm() / rounded.norm()
    assert error < tolerance
    assert (rounded - expected).norm() / expected.norm() < 100 * tolerance


def test_channels_last_and_non_contiguous_inputs():
    x, spatial, channel, padding = make_inputs(2, 4, 7, 6, 3, 1, 1, None, dtype=torch.float32)
    expected = decoupled_dwconv2d(x, spatial, channel, 3)
    x_cl = x.to(memory_format=torch.channels_last)
    spatial_t = spatial.transpose(2, 3).contiguous().transpose(2, 3)
    channel_t = channel.transpose(1, 2).contiguous().transpose(1, 2)
    assert not spatial_t.is_contiguous() and not channel_t.is_contiguous()
    for backend in ("reference", "auto"):
        out = decoupled_dwconv2d(x_cl, spatial_t, channel_t, 3, backend=backend)
        torch.testing.assert_close(out, expected)
    # The custom op ("auto") returns results in the input's memory format, as the Triton kernels
    # write them.
    assert out.is_contiguous(memory_format=torch.channels_last)
    x_cl.requires_grad_()
    decoupled_dwconv2d(x_cl, spatial_t, channel_t, 3).sum().backward()
    assert x_cl.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_forward_and_backward(device):
    x, spatial, channel, _ = make_inputs(2, 3, 6, 5, 3, 1, 1, None, dtype=torch.float32)
    x, spatial, channel = (t.to(device) for t in (x, spatial, channel))

    def layer(a, b, c):
        return torch.relu(decoupled_dwconv2d(a, b * 2.0, c, 3)).sum()

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    inputs = [t.clone().requires_grad_() for t in (x, spatial, channel)]
    eager_inputs = [t.clone().requires_grad_() for t in (x, spatial, channel)]
    loss = compiled(*inputs)
    loss.backward()
    eager_loss = layer(*eager_inputs)
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss)
    for a, b in zip(inputs, eager_inputs, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_flop_counter_counts_forward_and_backward():
    x, spatial, channel, _ = make_inputs(2, 3, 8, 6, 3, 2, 1, None, dtype=torch.float32)
    inputs = [t.requires_grad_() for t in (x, spatial, channel)]
    with FlopCounterMode(display=False) as counter:
        out = decoupled_dwconv2d(*inputs, 3, stride=2)
    forward_flops = 2 * 9 * 2 * 3 * 4 * 3
    assert out.shape == (2, 3, 4, 3)
    assert counter.get_total_flops() == forward_flops
    with FlopCounterMode(display=False) as counter:
        decoupled_dwconv2d(*inputs, 3, stride=2).sum().backward()
    assert counter.get_total_flops() == 4 * forward_flops


OP_ARGUMENTS = ["x", "spatial", "channel", "kernel_size", "stride", "padding", "dilation"]


@pytest.mark.parametrize(
    ("op", "arguments"),
    [
        ("decoupled_dwconv2d", OP_ARGUMENTS),
        ("decoupled_dwconv2d_backward", ["grad_out", *OP_ARGUMENTS]),
    ],
)
def test_custom_ops_have_a_kernel_per_device_and_no_impl_argument(op, arguments):
    """The dispatcher, not an argument, picks the implementation: a CPU and a CUDA kernel."""
    overload = getattr(torch.ops.dcsd, op).default
    assert [argument.name for argument in overload._schema.arguments] == arguments
    for key in ("CPU", "CUDA", "Meta", "Autograd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dcsd::{op}", key), key
    assert not torch._C._dispatch_has_kernel_for_dispatch_key(
        f"dcsd::{op}", "CompositeExplicitAutograd"
    )


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_cpu_kernel_of_custom_op_is_the_reference(layout):
    """Called directly, the custom op gives exactly the reference's output and gradients on CPU
    tensors, in the input's memory format."""
    x, spatial, channel, padding = make_inputs(2, 3, 7, 6, 3, 2, 1, None, dtype=torch.float32)
    x, spatial = (t.contiguous(memory_format=layout) for t in (x, spatial))
    options = (3, 2, padding, 1)
    inputs = [t.clone().requires_grad_() for t in (x, spatial, channel)]
    out = torch.ops.dcsd.decoupled_dwconv2d(*inputs, *options)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    assert out.is_contiguous(memory_format=layout)
    assert torch.equal(out, decoupled_dwconv2d_reference(x, spatial, channel, *options))
    expected = decoupled_dwconv2d_backward_reference(grad_out, x, spatial, channel, *options)
    for got, want in zip(grads, expected, strict=True):
        assert torch.equal(got, want)
    direct = torch.ops.dcsd.decoupled_dwconv2d_backward(grad_out, x, spatial, channel, *options)
    for got, want in zip(direct, expected, strict=True):
        assert torch.equal(got, want)


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="Triton on CPU needs TRITON_INTERPRET=1"
)
def test_triton_backend_on_cpu_runs_the_triton_launchers(monkeypatch):
    """backend="triton" on CPU tensors runs the Triton forward and, through the same autograd
    formula, the Triton backward; backend="auto" on CPU runs neither."""
    from dcsd.kernels import op

    launchers = pytest.importorskip("dcsd.kernels.triton_decoupled_dwconv")
    calls = {"forward": 0, "backward": 0}

    def counted(name):
        launcher = getattr(launchers, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return launcher(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(launchers, name, counted(name))
    x, spatial, channel, padding = make_inputs(1, 3, 5, 4, 3, 1, 1, None, dtype=torch.float32)
    results = {}
    for backend in ("auto", "triton"):
        inputs = [t.clone().requires_grad_() for t in (x, spatial, channel)]
        out = decoupled_dwconv2d(*inputs, 3, backend=backend)
        assert calls == {"forward": int(backend == "triton"), "backward": 0}
        assert not op._CPU_RUNS_TRITON.get()
        # The backward runs outside the public function: it must still take the forward's path.
        out.backward(torch.ones_like(out))
        assert calls == {"forward": int(backend == "triton"), "backward": int(backend == "triton")}
        assert not op._CPU_RUNS_TRITON.get()
        results[backend] = (out.detach(), *(t.grad for t in inputs))
    for a, b in zip(results["triton"], results["auto"], strict=True):
        torch.testing.assert_close(a, b)

    # Each op call's backward runs the kernel its forward ran, whatever is called in between.
    calls.update(forward=0, backward=0)
    inputs = [t.clone().requires_grad_() for t in (x, spatial, channel)]
    loss = decoupled_dwconv2d(*inputs, 3, backend="triton").sum()
    loss = loss + decoupled_dwconv2d(*inputs, 3, backend="auto").sum()
    loss.backward()
    assert calls == {"forward": 1, "backward": 1}


def _valid():
    x, spatial, channel, _ = make_inputs(2, 3, 6, 5, 3, 1, 1, None, dtype=torch.float32)
    return {"x": x, "spatial": spatial, "channel": channel, "kernel_size": 3}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"x": [[1.0]]}, TypeError, "x must be a torch.Tensor"),
        ({"x": torch.zeros(3, 6, 5)}, ValueError, "x must be 4-D"),
        ({"spatial": torch.zeros(2, 9, 30)}, ValueError, "spatial must be 4-D"),
        ({"channel": torch.zeros(2, 27)}, ValueError, "channel must be 3-D"),
        ({"spatial": torch.zeros(1, 9, 6, 5)}, ValueError, "batch sizes differ"),
        ({"channel": torch.zeros(2, 4, 9)}, ValueError, "C=3"),
        ({"spatial": torch.zeros(2, 8, 6, 5)}, ValueError, "K\\*K=9 filter taps in dim 1"),
        ({"channel": torch.zeros(2, 3, 8)}, ValueError, "K\\*K=9 filter taps in dim 2"),
        ({"spatial": torch.zeros(2, 9, 5, 5)}, ValueError, "Ho x Wo = 6x5"),
        ({"kernel_size": 4}, ValueError, "kernel_size must be odd"),
        ({"kernel_size": 3.0}, TypeError, "kernel_size must be an int"),
        ({"stride": 0}, ValueError, "stride must be >= 1"),
        ({"dilation": 0}, ValueError, "dilation must be >= 1"),
        ({"padding": -1}, ValueError, "padding must be >= 0"),
        ({"x": torch.zeros(2, 3, 6, 5, dtype=torch.float64)}, TypeError, "share one dtype"),
        ({"x": torch.zeros(2, 3, 6, 5, dtype=torch.int32)}, TypeError, "x must be float16"),
        ({"x": torch.zeros(2, 3, 6, 5, device="meta")}, ValueError, "one device"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"backend": None}, TypeError, "backend must be a str"),
        ({"x": torch.zeros(2, 3, 1, 1), "padding": 0}, ValueError, "too small"),
    ],
)
def test_bad_input_raises_clear_error(change, error, match):
    kwargs = _valid() | change
    with pytest.raises(error, match=match):
        decoupled_dwconv2d(**kwargs)


def test_triton_backend_rejects_float64():
    kwargs = _valid()
    kwargs = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with pytest.raises(TypeError, match="float64"):
        decoupled_dwconv2d(**kwargs, backend="triton")
