"""DCSDConv: shapes, factor and stop-gradient switches, filter normalisation, backends."""

import pytest
import torch

from dcsd.kernels import decoupled_dwconv2d_reference
from dcsd.modules import DCSDConv, FilterNorm, check_factors, set_op_backend

CHANNELS, DOMAINS, CAMERAS = 16, 3, 5


def make_layer(seed: int = 0, **kwargs) -> DCSDConv:
    torch.manual_seed(seed)
    options = dict(num_domains=DOMAINS, num_cameras=CAMERAS)
    options.update(kwargs)
    return DCSDConv(CHANNELS, **options)


def make_input(seed: int = 1, height: int = 8, width: int = 6) -> torch.Tensor:
    return torch.randn(2, CHANNELS, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("stride", "height", "width", "expected"),
    [(1, 8, 6, (8, 6)), (2, 8, 6, (4, 3)), (2, 7, 5, (4, 3))],
)
def test_output_and_logit_shapes(stride, height, width, expected):
    layer = make_layer(stride=stride)
    x = make_input(height=height, width=width)
    result = layer.forward_with_logits(x)
    assert result.output.shape == (2, CHANNELS, *expected)
    assert result.domain_logits.shape == (2, DOMAINS)
    assert result.camera_logits.shape == (2, CAMERAS)
    torch.testing.assert_close(layer(x), result.output, rtol=0, atol=0)


@pytest.mark.parametrize("spatial_information", [False, True])
@pytest.mark.parametrize("filter_norm", ["ddf", "gate", "none"])
def test_output_is_the_op_on_the_generated_filters(filter_norm, spatial_information):
    layer = make_layer(stride=2, filter_norm=filter_norm, spatial_information=spatial_information)
    if filter_norm == "gate":  # leave the zero start, so the gates are not all one
        for parameter in (*layer.channel_branch.parameters(), *layer.spatial_branch.parameters()):
            torch.nn.init.normal_(parameter, std=0.3)
    x = make_input()
    taps = 9
    pooled = x.mean(dim=(2, 3))
    information = layer.domain_mlp(pooled) + layer.camera_mlp(pooled)
    channel = layer.channel_branch(pooled + information).view(2, CHANNELS, taps)
    # The paper's literal reading: X + D + Cam, broadcast over H x W, into the 1x1 conv.
    spatial_input = x + information[:, :, None, None] if spatial_information else x
    spatial = layer.spatial_branch(spatial_input)
    if filter_norm == "ddf":
        # DDF's FilterNorm by hand: standardise each filter over its taps, then scale; the
        # spatial scale is DDF's fixed sqrt(2) / 3.
        channel = (channel - channel.mean(2, keepdim=True)) / channel.std(2, keepdim=True)
        channel = channel * layer.channel_norm.scale.view(1, CHANNELS, taps)
        spatial = (spatial - spatial.mean(1, keepdim=True)) / spatial.std(1, keepdim=True)
        spatial = spatial * 2**0.5 / 3
    elif filter_norm == "gate":
        channel = layer.static_filter * (1 + torch.tanh(channel))
        spatial = 1 + torch.tanh(spatial)
    expected = decoupled_dwconv2d_reference(x, spatial, channel, 3, stride=2)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("filter_norm", ["ddf", "rms", "gate", "none"])
def test_the_information_and_the_channel_filters_are_read_by_name(filter_norm):
    layer = make_layer(filter_norm=filter_norm)
    _randomise_generators(layer)
    pooled = make_input().mean(dim=(2, 3))
    predicted = layer.predicted_information(pooled)
    assert list(predicted) == ["domain", "camera"]
    torch.testing.assert_close(predicted["domain"], layer.domain_mlp(pooled), rtol=0, atol=0)
    torch.testing.assert_close(predicted["camera"], layer.camera_mlp(pooled), rtol=0, atol=0)
    condition = pooled + predicted["domain"] + predicted["camera"]
    channel = layer.channel_branch(condition).view(2, CHANNELS, 9)
    if filter_norm == "ddf":  # standardised over the taps, then scaled
        channel = (channel - channel.mean(2, keepdim=True)) / channel.std(2, keepdim=True)
        channel = channel * layer.channel_norm.scale.view(1, CHANNELS, 9)
    elif filter_norm == "rms":  # divided by the root mean square over the taps, then scaled
        channel = channel / channel.square().mean(2, keepdim=True).sqrt()
        channel = channel * layer.channel_norm.scale.view(1, CHANNELS, 9)
    elif filter_norm == "gate":
        channel = layer.static_filter * (1 + torch.tanh(channel))
    torch.testing.assert_close(layer.channel_filters(condition), channel, rtol=1e-5, atol=1e-6)
    assert make_layer(factors=("sample",)).predicted_information(pooled) == {}


def _randomise_generators(layer: DCSDConv) -> None:
    """Away from the initialisation, as a trained layer is (the gates' zero start included)."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if "classifier" not in name and name != "static_filter":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("spatial_information", [False, True])
@pytest.mark.parametrize("filter_norm", ["ddf", "rms", "gate"])
def test_output_grows_at_most_linearly_with_the_input(filter_norm, spatial_information):
    layer = make_layer(filter_norm=filter_norm, spatial_information=spatial_information)
    _randomise_generators(layer)
    x = make_input()
    with torch.no_grad():
        base = layer(x).norm()
        # x times 10 gives at most about 10 times the output, as a convolution's; at larger
        # factors the filters are bounded (FilterNorm: scale-free; gates: at most 2 each).
        assert layer(10 * x).norm() <= 10 * 1.2 * base
        for factor in (100.0, 1e4, 1e6):
            output = layer(factor * x)
            assert torch.isfinite(output).all()
            assert output.norm() <= factor * 4 * base


def test_unbounded_filters_grow_cubically():
    """The contrast that shows the bound above is not vacuous: without a bound, x times 1000
    gives more than 1000**2 times the output (1000**3 once the biases are negligible)."""
    layer = make_layer(filter_norm="none")
    _randomise_generators(layer)
    x = make_input()
    with torch.no_grad():
        assert layer(1000 * x).norm() > 1000**2 * layer(x).norm()


def test_gate_layer_starts_as_its_static_depthwise_filter():
    layer = make_layer(stride=2, filter_norm="gate")
    x = make_input()
    expected = torch.nn.functional.conv2d(
        x, layer.static_filter.view(CHANNELS, 1, 3, 3), stride=2, padding=1, groups=CHANNELS
    )
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_spatial_information_without_domain_or_camera_is_refused():
    with pytest.raises(ValueError, match="needs the 'domain' or 'camera' factor"):
        make_layer(factors=("sample",), spatial_information=True)
    with pytest.raises(TypeError, match="spatial_information must be a bool"):
        make_layer(spatial_information=1)


def test_spatial_information_off_in_effect_equals_todays_layer():
    """With D and Cam switched off (their MLPs' last layers zero) the spatial-information layer
    computes the layer without it."""
    plain = make_layer(seed=3)
    informed = make_layer(seed=3, spatial_information=True)
    informed.load_state_dict(plain.state_dict())
    x = make_input()
    assert not torch.allclose(informed(x), plain(x))
    with torch.no_grad():
        for layer in (plain, informed):
            for mlp in (layer.domain_mlp, layer.camera_mlp):
                mlp[-1].weight.zero_()
                mlp[-1].bias.zero_()
    torch.testing.assert_close(informed(x), plain(x), rtol=0, atol=0)


def test_every_parameter_gets_a_gradient():
    layer = make_layer(stride=2)
    result = layer.forward_with_logits(make_input())
    loss = result.output.square().mean() + result.domain_logits.sum() + result.camera_logits.sum()
    loss.backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("factor", ["domain", "camera"])
def test_stop_gradient_blocks_the_filter_path(factor):
    mlp_name = f"{factor}_mlp"
    for stop_gradient in (True, False):
        layer = make_layer(stop_gradient=stop_gradient)
        layer(make_input()).square().mean().backward()
        grads = [p.grad for p in getattr(layer, mlp_name).parameters()]
        if stop_gradient:
            assert all(grad is None for grad in grads)
        else:
            assert all(grad is not None and grad.abs().sum() > 0 for grad in grads)
        # The classifier loss reaches the MLP either way.
        layer.zero_grad(set_to_none=True)
        getattr(layer.forward_with_logits(make_input()), f"{factor}_logits").sum().backward()
        assert all(p.grad.abs().sum() > 0 for p in getattr(layer, mlp_name).parameters())


def test_stop_gradient_does_not_change_the_forward():
    x = make_input()
    on = make_layer(stop_gradient=True)
    off = make_layer(stop_gradient=False)
    off.load_state_dict(on.state_dict())
    torch.testing.assert_close(on(x), off(x), rtol=0, atol=0)


@pytest.mark.parametrize("factor", ["domain", "camera"])
def test_detach_information_input_keeps_the_classifier_losses_off_the_input(factor):
    """Detached (the default), a classifier's loss trains its MLP exactly as attached and gives
    the layer's input no gradient; attached, it reaches the input. The forward is the same."""
    detached = make_layer()
    attached = make_layer(detach_information_input=False)
    attached.load_state_dict(detached.state_dict())
    assert detached.detach_information_input and not attached.detach_information_input
    gradients = {}
    for name, layer in (("detached", detached), ("attached", attached)):
        x = make_input().requires_grad_(True)
        result = layer.forward_with_logits(x)
        getattr(result, f"{factor}_logits").square().sum().backward()
        mlp = getattr(layer, f"{factor}_mlp")
        gradients[name] = (x.grad, [p.grad for p in mlp.parameters()], result.output)
    assert gradients["detached"][0] is None
    assert gradients["attached"][0].abs().sum() > 0
    for detached_grad, attached_grad in zip(*(gradients[n][1] for n in gradients), strict=True):
        assert detached_grad.abs().sum() > 0
        torch.testing.assert_close(detached_grad, attached_grad, rtol=0, atol=0)
    torch.testing.assert_close(gradients["detached"][2], gradients["attached"][2], rtol=0, atol=0)


@pytest.mark.parametrize(
    "factors",
    [("sample",), ("sample", "domain"), ("sample", "camera"), ("sample", "domain", "camera")],
)
def test_factor_switches(factors):
    layer = make_layer(factors=factors)
    x = make_input()
    result = layer.forward_with_logits(x)
    assert layer.factors == factors
    for factor in ("domain", "camera"):
        logits = getattr(result, f"{factor}_logits")
        mlp = getattr(layer, f"{factor}_mlp")
        if factor not in factors:
            assert logits is None and mlp is None
            assert getattr(layer, f"{factor}_classifier") is None
            continue
        assert logits is not None
        # The factor's information really shapes the filters: perturb its MLP.
        before = layer(x)
        with torch.no_grad():
            mlp[-1].bias.add_(1.0)
        assert not torch.allclose(layer(x), before)


def test_sample_only_layer_ignores_domain_and_camera_counts():
    layer = DCSDConv(CHANNELS, factors=("sample",))
    assert layer.num_domains is None and layer.num_cameras is None
    assert not any("domain" in name or "camera" in name for name, _ in layer.named_parameters())


def test_filter_norm_standardises_over_taps():
    torch.manual_seed(0)
    norm = FilterNorm(4, 3, random_init=True)
    filters = torch.randn(2, 4, 9, 5) * 7 + 3
    # The scale is per (filter, tap): undo it to see the standardised filters.
    standardised = norm(filters) / norm.scale.detach()
    torch.testing.assert_close(standardised.mean(dim=2), torch.zeros(2, 4, 5), rtol=0, atol=1e-4)
    torch.testing.assert_close(standardised.std(dim=2), torch.ones(2, 4, 5), rtol=1e-4, atol=0)
    constant = FilterNorm(1, 3, random_init=False)
    torch.testing.assert_close(constant.scale, torch.full((1, 9, 1), 2**0.5 / 3))


def test_rms_filter_norm_keeps_each_filter_mean():
    torch.manual_seed(0)
    norm = FilterNorm(4, 3, random_init=False, center=False)
    filters = torch.rand(2, 4, 9, 5) + 0.5  # all-positive: a smoothing filter
    normalised = norm(filters) / norm.scale.detach()
    rms = normalised.square().mean(dim=2).sqrt()
    torch.testing.assert_close(rms, torch.ones(2, 4, 5), rtol=1e-5, atol=0)
    # Only rescaled: the filter's shape (and so its positive mean) is kept, unlike "ddf".
    torch.testing.assert_close(normalised / normalised[:, :, :1], filters / filters[:, :, :1])
    assert bool((normalised.mean(dim=2) > 0.5).all())


@pytest.mark.parametrize(
    ("choice", "name", "center"),
    [
        ("ddf", "ddf", True),
        ("rms", "rms", False),
        ("gate", "gate", None),
        ("none", "none", None),
    ],
)
def test_filter_norm_choices(choice, name, center):
    layer = make_layer(filter_norm=choice)
    assert layer.filter_norm == name
    if center is None:
        assert layer.channel_norm is None and layer.spatial_norm is None
    else:
        assert layer.channel_norm.center is center and layer.spatial_norm.center is center
    assert layer(make_input()).shape == (2, CHANNELS, 8, 6)
    with pytest.raises(ValueError, match="filter_norm must be one of"):
        make_layer(filter_norm="batch")
    for value in (1.0, True):  # a bool is no longer read as "ddf" / "none"
        with pytest.raises(TypeError, match="filter_norm must be a str, one of"):
            make_layer(filter_norm=value)


def test_filter_norm_can_be_switched_off():
    layer = make_layer(filter_norm="none")
    assert layer.channel_norm is None and layer.spatial_norm is None
    assert layer.static_filter is None
    assert layer(make_input()).shape == (2, CHANNELS, 8, 6)


def test_ddf_spatial_scale_is_fixed_as_in_ddf():
    layer = make_layer(filter_norm="ddf")
    names = dict(layer.named_parameters())
    assert "spatial_norm.scale" not in names and "channel_norm.scale" in names
    assert "spatial_norm.scale" in layer.state_dict()


def test_bfloat16_autocast_keeps_one_dtype_for_the_op():
    layer = make_layer(stride=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = layer.forward_with_logits(make_input().bfloat16())
    assert result.output.dtype == torch.bfloat16
    assert result.domain_logits.dtype == torch.bfloat16


def test_channels_last_input_gives_the_same_output():
    layer = make_layer(stride=2)
    x = make_input()
    expected = layer.forward_with_logits(x)
    actual = layer.to(memory_format=torch.channels_last).forward_with_logits(
        x.contiguous(memory_format=torch.channels_last)
    )
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backends_agree(triton_device):
    layer = make_layer(stride=2).to(triton_device)
    x = make_input().to(triton_device)
    outputs = {}
    for backend in ("reference", "auto", "triton"):
        assert set_op_backend(layer, backend) == 1
        outputs[backend] = layer(x)
    # On CUDA "auto" runs the kernels too, in another summation order than the reference.
    exact = 0 if triton_device.type == "cpu" else 1e-5
    torch.testing.assert_close(outputs["auto"], outputs["reference"], rtol=exact, atol=exact)
    torch.testing.assert_close(outputs["triton"], outputs["reference"], rtol=1e-5, atol=1e-5)


def test_set_op_backend_counts_layers_and_checks_the_name():
    model = torch.nn.Sequential(make_layer(), torch.nn.ReLU(), make_layer())
    assert set_op_backend(model, "reference") == 2
    assert all(layer.backend == "reference" for layer in (model[0], model[2]))
    with pytest.raises(ValueError, match="backend must be one of"):
        set_op_backend(model, "cuda")
    with pytest.raises(TypeError, match="backend must be a str, one of .* got NoneType"):
        set_op_backend(model, None)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(factors=("domain",)), ValueError, "must include 'sample'"),
        (dict(factors=("sample", "view")), ValueError, "unknown"),
        (dict(factors="sample"), TypeError, "tuple or list"),
        (dict(num_domains=None), TypeError, "num_domains must be an int"),
        (dict(num_cameras=0), ValueError, "num_cameras must be >= 1"),
        (dict(kernel_size=4), ValueError, "kernel_size must be odd"),
        (dict(backend="cuda"), ValueError, "backend must be one of"),
        (dict(backend=1), TypeError, "backend must be a str"),
        (dict(op_backend="reference"), TypeError, "unexpected keyword argument 'op_backend'"),
        (dict(channel_ratio=0), ValueError, "channel_ratio"),
        (dict(detach_information_input=1), TypeError, "detach_information_input must be a bool"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_layer(**kwargs)


def test_check_factors_orders_canonically():
    assert check_factors(["camera", "sample"]) == ("sample", "camera")


def test_filter_norm_needs_more_than_one_tap():
    with pytest.raises(ValueError, match="kernel_size >= 3"):
        DCSDConv(8, kernel_size=1, num_domains=2, num_cameras=3, filter_norm="ddf")
    layer = DCSDConv(8, kernel_size=1, num_domains=2, num_cameras=3, filter_norm="none")
    out = layer(torch.randn(2, 8, 5, 4))
    assert out.shape == (2, 8, 5, 4) and torch.isfinite(out).all()
