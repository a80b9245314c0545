"""mean_and_pointwise_conv: the channel mean, 1x1 convolution and pass-through of one input with
one input gradient, against PyTorch's own mean and convolution (autograd through them, float64),
on every backend."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dcsd.kernels import mean_and_pointwise_conv, mean_and_pointwise_conv_backward_reference

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# (batch, channels, height, width, out channels, stride, channels_last): channel and position
# counts that the Triton kernel's blocks (16 channels, 128 positions) do not divide.
CASES = [
    (2, 5, 7, 6, 9, 1, False),
    (1, 20, 9, 15, 9, 2, True),
    (2, 3, 8, 5, 25, 3, False),
    (1, 17, 12, 12, 9, 2, False),
]


def inputs(case, dtype=torch.float64, seed=0):
    batch, channels, height, width, out_channels, stride, channels_last = case
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, channels, generator=generator, dtype=torch.float64)
    bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
    height_out, width_out = (height - 1) // stride + 1, (width - 1) // stride + 1
    grad_mean = torch.randn(batch, channels, generator=generator, dtype=torch.float64)
    grad_projected = torch.randn(
        batch, out_channels, height_out, width_out, generator=generator, dtype=torch.float64
    )
    # The op's dx as autograd hands it over: here NCHW whatever x's layout, to test the strides.
    grad_through = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    gradients = (grad_mean.to(dtype), grad_projected.to(dtype), grad_through.to(dtype))
    return x.to(dtype), weight, bias, stride, *gradients


def torch_oracle(x, weight, bias, stride, grad_mean, grad_projected, grad_through=None):
    """Outputs and (dx, dweight, dbias) from PyTorch's mean and conv2d, autograd, float64; x's
    other use (the pass-through) is x itself."""
    x, weight, bias = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    mean = x.mean(dim=(2, 3))
    projected = F.conv2d(x, weight[:, :, None, None], bias, stride=stride)
    loss = (mean * grad_mean.double()).sum() + (projected * grad_projected.double()).sum()
    if grad_through is not None:
        loss = loss + (x * grad_through.double()).sum()
    return (mean, projected, *torch.autograd.grad(loss, (x, weight, bias)))


def run(backend, x, weight, bias, stride, grad_mean, grad_projected, grad_through=None):
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    mean, projected, through = mean_and_pointwise_conv(x, weight, bias, stride, backend=backend)
    torch.testing.assert_close(through, x, rtol=0, atol=0)
    loss = (mean.double() * grad_mean.double()).sum()
    loss = loss + (projected.double() * grad_projected.double()).sum()
    if grad_through is not None:
        loss = loss + (through.double() * grad_through.double()).sum()
    return (mean, projected, *torch.autograd.grad(loss, (x, weight, bias)))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("through", [True, False], ids=["through", "no-through"])
def test_backward_reference_equals_autograd_through_torch_ops(case, through):
    x, weight, bias, stride, grad_mean, grad_projected, grad_through = inputs(case)
    grad_through = grad_through if through else None
    expected = torch_oracle(x, weight, bias, stride, grad_mean, grad_projected, grad_through)
    grads = mean_and_pointwise_conv_backward_reference(
        grad_mean, grad_projected, grad_through, x, weight, stride
    )
    for actual, wanted in zip(grads, expected[2:], strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=1e-12)
    assert grads[0].is_contiguous(memory_format=torch.channels_last) == case[-1]


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_op_equals_torch_ops_forward_and_backward(case, backend):
    args = inputs(case)
    for actual, wanted in zip(run(backend, *args), torch_oracle(*args), strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=1e-12)
    # Without the pass-through used: its gradient is None in the backward.
    for actual, wanted in zip(run(backend, *args[:-1]), torch_oracle(*args[:-1]), strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=1e-12)


def test_one_output_used_and_gradcheck():
    x, weight, bias, stride, _, grad_projected, _ = inputs(CASES[1])
    x.requires_grad_()
    _, projected, _ = mean_and_pointwise_conv(x, weight, bias, stride)
    (grad_x,) = torch.autograd.grad((projected * grad_projected).sum(), x)
    expected = torch_oracle(x, weight, bias, stride, torch.zeros(x.shape[:2]), grad_projected)
    torch.testing.assert_close(grad_x, expected[2], rtol=1e-12, atol=1e-12)
    small = [t.detach().requires_grad_() for t in inputs((1, 3, 4, 5, 4, 2, False))[:3]]
    # The pass-through's gradient with the others: x * 1 so gradcheck may perturb x in place.
    assert torch.autograd.gradcheck(
        lambda *t: tuple(o * 1 for o in mean_and_pointwise_conv(*t, 2)), small
    )


def test_custom_ops_pass_opcheck():
    x, weight, bias, stride, grad_mean, grad_projected, grad_through = inputs(
        CASES[1], torch.float32
    )
    weight, bias = weight.float(), bias.float()
    torch.library.opcheck(torch.ops.dcsd.mean_and_pointwise_conv.default, (x, weight, bias, stride))
    backward = torch.ops.dcsd.mean_and_pointwise_conv_backward.default
    for through in (grad_through, None):
        torch.library.opcheck(backward, (grad_mean, grad_projected, through, x, weight, stride))


@pytest.mark.skipif(not INTERPRETED, reason="the Triton kernel on CPU needs TRITON_INTERPRET=1")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("through", [True, False], ids=["through", "no-through"])
def test_triton_input_gradient_equals_float64_oracle(case, dtype, through):
    args = inputs(case, dtype)
    args = args if through else args[:-1]
    actual = run("triton", *args)
    expected = torch_oracle(*args)
    mean, projected, grad_x = actual[:3]
    assert mean.dtype == projected.dtype == grad_x.dtype == dtype
    assert projected.is_contiguous(memory_format=torch.channels_last) == case[-1]
    assert grad_x.is_contiguous(memory_format=torch.channels_last) == case[-1]
    # float32 accumulation, rounded once to dtype: within the dtype's rounding of the result.
    tolerance = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for got, wanted in zip((mean, projected, grad_x), expected[:3], strict=True):
        scale = wanted.abs().max().item()
        torch.testing.assert_close(got.double(), wanted, rtol=tolerance, atol=tolerance * scale)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_gradients_equal_float64_oracle(case, dtype):
    """On CUDA tensors backend="auto" runs the Triton kernel for dx, torch for dweight, dbias."""
    x, weight, bias, stride, *grads = inputs(case, dtype)
    weight, bias = weight.to(dtype), bias.to(dtype)
    on_gpu = [t.cuda() for t in (x, weight, bias)]
    actual = run("auto", *on_gpu, stride, *(t.cuda() for t in grads))
    expected = torch_oracle(x, weight, bias, stride, *grads)
    # float32: cuDNN convolutions may run in TF32 (a 10-bit mantissa) by default.
    tolerance = {torch.float32: 5e-3, torch.bfloat16: 2e-2}[dtype]
    for got, wanted in zip(actual, expected, strict=True):
        scale = wanted.abs().max().item()
        got = got.double().cpu()
        torch.testing.assert_close(got, wanted, rtol=tolerance, atol=tolerance * scale)
    assert actual[2].is_contiguous(memory_format=torch.channels_last) == case[-1]


def test_refuses_bad_arguments():
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match=r"must be \(T, C=4\)"):
        mean_and_pointwise_conv(x, torch.randn(9, 3), torch.randn(9))
    with pytest.raises(ValueError, match="expected x"):
        mean_and_pointwise_conv(x[0], torch.randn(9, 4), torch.randn(9))
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        mean_and_pointwise_conv(x, None, torch.randn(9))
    with pytest.raises(ValueError, match="stride"):
        mean_and_pointwise_conv(x, torch.randn(9, 4), torch.randn(9), stride=0)


def test_torch_compile_fullgraph_forward_and_backward():
    x, weight, bias, stride, grad_mean, grad_projected, _ = inputs(CASES[1], torch.float32)

    def generators(a, w, b):
        mean, projected, through = mean_and_pointwise_conv(a, w, b, stride)
        loss = (mean * grad_mean).sum() + (projected.relu() * grad_projected).sum()
        return loss + through.square().sum()

    compiled = torch.compile(generators, fullgraph=True, backend="aot_eager")
    tensors = [t.float() for t in (x, weight, bias)]
    compiled_inputs = [t.clone().requires_grad_() for t in tensors]
    eager_inputs = [t.clone().requires_grad_() for t in tensors]
    compiled(*compiled_inputs).backward()
    generators(*eager_inputs).backward()
    for a, b in zip(compiled_inputs, eager_inputs, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_flop_counter_counts_the_convolution_as_torch_does():
    x, weight, bias, stride, *_ = inputs(CASES[3], torch.float32)
    tensors = [t.float().requires_grad_() for t in (x, weight, bias)]
    with FlopCounterMode(display=False) as ours:
        mean_and_pointwise_conv(*tensors, stride)[1].sum().backward()
    with FlopCounterMode(display=False) as torchs:
        conv = F.conv2d(tensors[0], tensors[1][:, :, None, None], tensors[2], stride=stride)
        conv.sum().backward()
    assert ours.get_total_flops() == torchs.get_total_flops() > 0
