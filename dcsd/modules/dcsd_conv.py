"""The DCSD layer: a dynamic depthwise convolution whose filters depend on the sample, its domain
and its camera (DCSD.md section 2).

For an input X (N, C, H, W):

- domain MLP and camera MLP (C -> C/4 -> C on GAP(X)) predict the domain information D and the
  camera information Cam (N, C); a linear classifier on each gives the per-layer domain and
  camera logits, supervised by the domain ID and the global camera ID. By default the MLPs read
  GAP(X) detached, so those classifiers' losses train the MLPs and classifiers but never the
  backbone (``detach_information_input``);
- the channel branch turns z = GAP(X) + D + Cam (D and Cam detached by default) into one K x K
  filter per channel (N, C, K*K) with two FC layers (C -> C*r -> C*K*K, r = 0.2 as DDF);
- the spatial branch turns X into one K x K filter per output position (N, K*K, Ho, Wo) with a
  strided 1x1 convolution;
- with ``spatial_information=True`` the spatial branch reads X + D + Cam, as the paper writes
  it, computed as conv1x1(X) + W (D + Cam) without materialising the broadcast sum;
- both filters are bounded (``filter_norm``: DDF's FilterNorm by default, a scale-only variant,
  or bounded gates on a static depthwise filter) and combined by
  :func:`dcsd.kernels.decoupled_dwconv2d`. Bounded filters keep the layer's output linear in
  its input, as a convolution's; unbounded ones (``"none"``) make it cubic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn as nn

from dcsd.kernels import check_backend, decoupled_dwconv2d, mean_and_pointwise_conv
from dcsd.validation import check_bool, check_int

FACTORS = ("sample", "domain", "camera")
# How the generated filters are bounded: DDF's FilterNorm (standardise over the taps, then
# scale), scale-only (divide by the root mean square over the taps, keeping each filter's mean),
# gates (a learned static depthwise filter times 1 + tanh of each generated filter, as DCD's
# static filter plus a bounded dynamic residual), or none (unbounded: the output is cubic in the
# input, and a fresh model overflows to NaN in eval mode).
FILTER_NORMS = ("ddf", "rms", "gate", "none")
DEFAULT_FILTER_NORM = "ddf"

# DDF initialises the filter scale from the gain of the nonlinearity that follows the layer
# (bn2 + ReLU in a bottleneck) over the kernel size.
_RELU_GAIN = math.sqrt(2.0)
# DDF's FilterNorm epsilon: the standard deviation of K*K taps is only zero for constant filters.
_FILTER_NORM_EPS = 1e-10


class DCSDConvOutput(NamedTuple):
    """What :meth:`DCSDConv.forward_with_logits` (and a bottleneck holding one) returns.

    Attributes:
        output: (N, C, Ho, Wo) the layer's output feature map.
        domain_logits: (N, num_domains), or None when the domain factor is off.
        camera_logits: (N, num_cameras), or None when the camera factor is off.
    """

    output: torch.Tensor
    domain_logits: torch.Tensor | None
    camera_logits: torch.Tensor | None


def check_factors(factors: Iterable[str]) -> tuple[str, ...]:
    """Validate a factor selection and return it in canonical order.

    Args:
        factors: names among ``("sample", "domain", "camera")``; ``"sample"`` is required, as
            in every row of the paper's ablation (S, S+D, S+C, S+D+C).

    Returns:
        The factors as a tuple ordered as ``FACTORS``.
    """
    if isinstance(factors, str) or not isinstance(factors, Iterable):
        raise TypeError(
            "factors must be a tuple or list of names such as ('sample', 'domain'), "
            f"got {factors!r}"
        )
    names = list(factors)
    unknown = [name for name in names if name not in FACTORS]
    if unknown:
        raise ValueError(f"factors must be names among {FACTORS}, got unknown {unknown}")
    if "sample" not in names:
        raise ValueError(
            f"factors must include 'sample' (the ablations are S, S+D, S+C, S+D+C), got {names}"
        )
    return tuple(name for name in FACTORS if name in names)


def check_filter_norm(filter_norm: object) -> str:
    """Validate a filter normalisation choice and return its name.

    Args:
        filter_norm: one of ``FILTER_NORMS`` (``"ddf"``, ``"rms"``, ``"gate"``, ``"none"``).
    """
    if not isinstance(filter_norm, str):
        raise TypeError(
            f"filter_norm must be a str, one of {FILTER_NORMS}, got "
            f"{type(filter_norm).__name__} {filter_norm!r}"
        )
    if filter_norm not in FILTER_NORMS:
        raise ValueError(f"filter_norm must be one of {FILTER_NORMS}, got {filter_norm!r}")
    return filter_norm


class FilterNorm(nn.Module):
    """Filter normalisation over the K*K taps of every filter, then a learnable scale.

    ``center=True`` is DDF's FilterNorm: each filter is standardised (zero mean, unit std over
    its taps). ``center=False`` only divides each filter by its root mean square over the taps,
    which bounds its magnitude as DDF's does but keeps its mean: a smoothing (all-positive)
    filter stays reachable, which a zero-mean filter never is.

    Filters come in as (N, F, K*K, P): F filters per sample, each with K*K taps, repeated over
    P positions (P = 1 for channel filters, F = 1 for spatial filters). The scale has one value
    per (filter, tap), initialised to ``gain / K`` (constant, as DDF's spatial scale) or
    ``N(0, 1) * gain / K`` (``random_init``, as DDF's learnable channel scale); with
    ``learnable=False`` it is a fixed buffer, as DDF's spatial scale (a plain float there).
    Statistics are computed in float32 whatever the input dtype; the result has the input dtype.
    """

    def __init__(
        self,
        num_filters: int,
        kernel_size: int,
        *,
        random_init: bool,
        center: bool = True,
        learnable: bool = True,
    ) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        scale = torch.full((num_filters, taps, 1), _RELU_GAIN / kernel_size)
        if random_init:
            scale = scale * torch.randn(num_filters, taps, 1)
        if learnable:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.center = center

    def forward(self, filters: torch.Tensor) -> torch.Tensor:
        """filters: (N, F, K*K, P) -> (N, F, K*K, P) normalised over dim 2 and scaled."""
        values = filters.float()
        if self.center:
            centred = values - values.mean(dim=2, keepdim=True)
            normalised = centred / (values.std(dim=2, keepdim=True) + _FILTER_NORM_EPS)
        else:
            rms = values.square().mean(dim=2, keepdim=True).sqrt()
            normalised = values / (rms + _FILTER_NORM_EPS)
        return (normalised * self.scale).to(filters.dtype)

    def extra_repr(self) -> str:
        return f"center={self.center}"


def _mlp(channels: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
    )


class DCSDConv(nn.Module):
    """Domain-Camera-Sample dynamic depthwise convolution, the drop-in for a bottleneck's 3x3 conv.

    Args:
        channels: C, input and output channels.
        kernel_size: K (odd).
        stride: the replaced convolution's stride (applied by the spatial branch and the op).
        num_domains: classes of the domain classifier; required when ``"domain"`` is a factor.
        num_cameras: classes of the camera classifier (global camera IDs); required when
            ``"camera"`` is a factor.
        factors: which information enters filter generation: ``"sample"`` (GAP of the input,
            always on), ``"domain"``, ``"camera"`` (paper Table V). A switched-off factor has no
            MLP, no classifier and no logits.
        stop_gradient: feed ``D.detach()`` and ``Cam.detach()`` to the channel branch, so the
            domain and camera MLPs learn only from their classifiers (paper Table VI).
        detach_information_input: the domain and camera MLPs read ``GAP(X).detach()``, so
            what reaches the MLPs (their classifiers' losses; with ``stop_gradient=False`` the
            filters' gradient too) trains the MLPs and never flows on into the backbone;
            ``False`` lets it train the backbone too (a multi-task reading of the paper, which
            does not say). The forward is the same either way. Default ``True``, chosen on
            held-out training identities: letting the camera loss reach the backbone trains
            its features to tell cameras apart, which costs cross-camera retrieval
            (docs/research.md).
        dilation: dilation of the dynamic filter.
        channel_ratio: hidden width of the channel branch as a fraction of C (DDF's SE ratio).
        mlp_ratio: hidden width of the domain and camera MLPs as a fraction of C.
        filter_norm: how the generated filters are bounded: ``"ddf"`` (the default; DDF's
            FilterNorm, :class:`FilterNorm`: each filter standardised over its taps, a learnable
            channel scale and DDF's fixed spatial scale sqrt(2)/K; the one that loads DDF's
            ImageNet weights), ``"rms"`` (divided by the root mean square over the taps, means
            kept, learnable scales), ``"gate"`` (a learned static depthwise filter times
            ``1 + tanh`` of both generated filters; the gates' last layers start at zero, so the
            layer starts as a static depthwise convolution) or ``"none"`` (unbounded: the output
            is cubic in the input, and a fresh model in eval mode overflows to NaN by layer3;
            kept for the study that measured it). The first three keep the output linear in
            the input; the choice was made on held-out training identities (docs, research).
        spatial_information: the spatial branch reads X + D + Cam (detached as for the channel
            branch under ``stop_gradient``), as the paper's text writes it, instead of X alone;
            the 1x1 convolution of the broadcast D + Cam is a per-sample offset of each tap.
            Needs the domain or the camera factor.
        backend: backend of :func:`dcsd.kernels.decoupled_dwconv2d`: ``"auto"``,
            ``"triton"`` or ``"reference"`` (see :func:`set_op_backend`).

    Shapes:
        x: (N, C, H, W) -> output (N, C, Ho, Wo), Ho = (H + 2p - d(K-1) - 1) // stride + 1 with
        p = d(K-1)//2.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        num_domains: int | None = None,
        num_cameras: int | None = None,
        factors: Iterable[str] = FACTORS,
        stop_gradient: bool = True,
        detach_information_input: bool = True,
        dilation: int = 1,
        channel_ratio: float = 0.2,
        mlp_ratio: float = 0.25,
        filter_norm: str = DEFAULT_FILTER_NORM,
        spatial_information: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_int("channels", channels, 1)
        check_int("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        check_int("stride", stride, 1)
        check_int("dilation", dilation, 1)
        self.factors = check_factors(factors)
        for name, ratio in (("channel_ratio", channel_ratio), ("mlp_ratio", mlp_ratio)):
            if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
                raise ValueError(f"{name} must be a number in (0, 1], got {ratio!r}")
        check_backend(backend)
        check_bool("stop_gradient", stop_gradient)
        check_bool("detach_information_input", detach_information_input)
        check_bool("spatial_information", spatial_information)
        if spatial_information and self.factors == ("sample",):
            raise ValueError(
                "spatial_information=True feeds D + Cam to the spatial branch, so it needs the "
                f"'domain' or 'camera' factor; got factors={self.factors}"
            )
        filter_norm = check_filter_norm(filter_norm)
        if filter_norm == "ddf" and kernel_size == 1:
            raise ValueError(
                "filter_norm='ddf' standardises each filter over its K*K taps, which needs "
                "kernel_size >= 3; got kernel_size=1 (pass filter_norm='none' or 'rms')"
            )

        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.stop_gradient = stop_gradient
        self.detach_information_input = detach_information_input
        self.spatial_information = spatial_information
        self.backend = backend
        self.filter_norm = filter_norm
        taps = kernel_size * kernel_size
        mlp_hidden = max(1, int(channels * mlp_ratio))

        self.domain_mlp: nn.Module | None = None
        self.domain_classifier: nn.Linear | None = None
        if "domain" in self.factors:
            check_int("num_domains", num_domains, 1)
            self.domain_mlp = _mlp(channels, mlp_hidden, channels)
            self.domain_classifier = nn.Linear(channels, num_domains)
        self.camera_mlp: nn.Module | None = None
        self.camera_classifier: nn.Linear | None = None
        if "camera" in self.factors:
            check_int("num_cameras", num_cameras, 1)
            self.camera_mlp = _mlp(channels, mlp_hidden, channels)
            self.camera_classifier = nn.Linear(channels, num_cameras)

        self.channel_branch = _mlp(channels, max(1, int(channels * channel_ratio)), channels * taps)
        self.spatial_branch = nn.Conv2d(channels, taps, kernel_size=1, stride=stride)
        self.channel_norm: FilterNorm | None = None
        self.spatial_norm: FilterNorm | None = None
        if filter_norm in ("ddf", "rms"):
            ddf = filter_norm == "ddf"
            self.channel_norm = FilterNorm(channels, kernel_size, random_init=True, center=ddf)
            self.spatial_norm = FilterNorm(
                1, kernel_size, random_init=False, center=ddf, learnable=not ddf
            )
        self.static_filter: nn.Parameter | None = None
        if filter_norm == "gate":
            self.static_filter = nn.Parameter(torch.empty(channels, taps))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The generators' initialisation: the spatial 1x1 convolution Kaiming normal (fan_out,
        as DDF and torchvision's ResNet); with ``filter_norm="gate"`` the static filter Kaiming
        normal as a static depthwise convolution, and both gates' last layers zero, so the layer
        starts as that static depthwise convolution."""
        nn.init.kaiming_normal_(self.spatial_branch.weight, mode="fan_out", nonlinearity="relu")
        if self.static_filter is not None:
            taps = self.kernel_size * self.kernel_size
            # A depthwise conv's fan_out is C * K * K (torchvision's MobileNet convention).
            std = math.sqrt(2.0 / (self.channels * taps))
            nn.init.normal_(self.static_filter, std=std)
            for module in (self.spatial_branch, self.channel_branch[-1]):
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_domains(self) -> int | None:
        """Classes of the domain classifier, None when the domain factor is off."""
        return None if self.domain_classifier is None else self.domain_classifier.out_features

    @property
    def num_cameras(self) -> int | None:
        """Classes of the camera classifier, None when the camera factor is off."""
        return None if self.camera_classifier is None else self.camera_classifier.out_features

    def reset_classifiers(
        self, num_domains: int | None = None, num_cameras: int | None = None
    ) -> None:
        """Replace the domain and / or camera classifier by a fresh one with that many classes
        (``None``: keep it), initialised as a new layer's; the MLPs that predict D and Cam, and
        everything else, are kept.

        Raises:
            ValueError: a size for a factor that is off, or a size below 1.
        """
        for name, size in (("domain", num_domains), ("camera", num_cameras)):
            if size is None:
                continue
            check_int(f"num_{name}s", size, 1)
            old = getattr(self, f"{name}_classifier")
            if old is None:
                raise ValueError(
                    f"num_{name}s={size}: this layer has no {name} classifier (its factors are "
                    f"{self.factors})"
                )
            fresh = nn.Linear(self.channels, size, device=old.weight.device, dtype=old.weight.dtype)
            setattr(self, f"{name}_classifier", fresh)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """This layer's parameters by role, disjoint and covering all of them:

        - ``"generators"``: the filter generators (channel and spatial branches, their
          FilterNorm scales), fresh even on a pretrained backbone;
        - ``"information"``: the domain and camera MLPs that predict D and Cam;
        - ``"heads"``: the domain and camera classifiers;
        - ``"backbone"``: the static depthwise filter of ``filter_norm="gate"``.
        """
        parts: dict[str, tuple[nn.Module | nn.Parameter | None, ...]] = {
            "generators": (
                self.channel_branch,
                self.spatial_branch,
                self.channel_norm,
                self.spatial_norm,
            ),
            "information": (self.domain_mlp, self.camera_mlp),
            "heads": (self.domain_classifier, self.camera_classifier),
            "backbone": (self.static_filter,),
        }
        groups: dict[str, list[nn.Parameter]] = {}
        for key, members in parts.items():
            groups[key] = []
            for member in members:
                if isinstance(member, nn.Parameter):
                    groups[key].append(member)
                elif member is not None:
                    groups[key].extend(member.parameters())
        return groups

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this layer) of the parameters that take the normalisation weight
        decay, as timm's ``no_weight_decay``: the FilterNorm scales and every bias."""
        return {
            f"{module_name}.{name}" if module_name else name
            for module_name, module in self.named_modules()
            for name, _ in module.named_parameters(recurse=False)
            if isinstance(module, FilterNorm) or name == "bias"
        }

    def _forward(self, x: torch.Tensor, with_logits: bool) -> DCSDConvOutput:
        batch, channels = x.shape[0], x.shape[1]
        taps = self.kernel_size * self.kernel_size
        # The channel branch's pooling and the spatial branch's 1x1 convolution, in one op whose
        # backward writes x's gradient once for both and for the op, which reads x through it.
        pooled, spatial, x = mean_and_pointwise_conv(
            x,
            self.spatial_branch.weight.flatten(1),
            self.spatial_branch.bias,
            stride=self.stride,
            backend=self.backend,
        )
        predicted = self.predicted_information(pooled)
        logits: dict[str, torch.Tensor | None] = {"domain": None, "camera": None}
        information: torch.Tensor | None = None
        for name, value in predicted.items():
            if with_logits:
                classifier = self.domain_classifier if name == "domain" else self.camera_classifier
                logits[name] = classifier(value)
            value = value.detach() if self.stop_gradient else value
            information = value if information is None else information + value

        channel = self.channel_filters(pooled if information is None else pooled + information)
        if self.spatial_information and information is not None:
            # conv1x1(X + D + Cam) = conv1x1(X) + W (D + Cam): one (N, K*K) offset per sample.
            weight = self.spatial_branch.weight.reshape(taps, channels)
            offset = information.to(spatial.dtype) @ weight.to(spatial.dtype).t()
            spatial = spatial + offset[:, :, None, None]
        height_out, width_out = spatial.shape[2], spatial.shape[3]
        spatial = spatial.reshape(batch, 1, taps, height_out * width_out)
        if self.spatial_norm is not None:
            spatial = self.spatial_norm(spatial)
        elif self.static_filter is not None:
            spatial = 1.0 + torch.tanh(spatial)
        # Under autocast the convolution and the linear layers may return different dtypes
        # than x; the op takes one dtype.
        output = decoupled_dwconv2d(
            x,
            spatial.reshape(batch, taps, height_out, width_out).to(x.dtype),
            channel.reshape(batch, channels, taps).to(x.dtype),
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            backend=self.backend,
        )
        return DCSDConvOutput(output, logits["domain"], logits["camera"])

    def predicted_information(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """The predicted domain and camera information, D and Cam, for ``pooled`` = GAP(X)
        (N, C): each (N, C), keyed ``"domain"`` and ``"camera"`` for the factors this layer has
        (empty for S). Under ``detach_information_input`` the MLPs read ``pooled`` detached;
        ``stop_gradient`` is applied by the caller, after the classifiers."""
        information_input = pooled.detach() if self.detach_information_input else pooled
        predicted = {}
        if self.domain_mlp is not None:
            predicted["domain"] = self.domain_mlp(information_input)
        if self.camera_mlp is not None:
            predicted["camera"] = self.camera_mlp(information_input)
        return predicted

    def channel_filters(self, condition: torch.Tensor) -> torch.Tensor:
        """The channel filters (N, C, K*K) generated from ``condition`` (N, C), bounded as
        ``filter_norm`` says; the forward passes GAP(X) + D + Cam (GAP(X) alone for S)."""
        batch, taps = condition.shape[0], self.kernel_size * self.kernel_size
        channel = self.channel_branch(condition).reshape(batch, self.channels, taps, 1)
        if self.channel_norm is not None:
            channel = self.channel_norm(channel)
        elif self.static_filter is not None:
            channel = self.static_filter[:, :, None] * (1.0 + torch.tanh(channel))
        return channel.reshape(batch, self.channels, taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, Ho, Wo). The MLPs run (D and Cam shape the filters); the
        classifiers do not."""
        return self._forward(x, with_logits=False).output

    def forward_with_logits(self, x: torch.Tensor) -> DCSDConvOutput:
        """x: (N, C, H, W) -> output (N, C, Ho, Wo) with this layer's domain and camera logits."""
        return self._forward(x, with_logits=True)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"factors={self.factors}, stop_gradient={self.stop_gradient}, "
            f"detach_information_input={self.detach_information_input}, "
            f"filter_norm={self.filter_norm!r}, spatial_information={self.spatial_information}, "
            f"backend={self.backend!r}"
        )


def set_op_backend(module: nn.Module, backend: str) -> int:
    """Set the op backend of every :class:`DCSDConv` inside ``module``.

    Args:
        module: a model or layer; searched recursively.
        backend: ``"auto"`` (Triton on CUDA, the registered custom op running the reference on
            CPU), ``"triton"`` (CPU needs ``TRITON_INTERPRET=1``) or ``"reference"`` (plain
            PyTorch ops: ONNX export, autograd through composite ops).

    Returns:
        How many DCSD layers were changed.
    """
    check_backend(backend)
    layers = [layer for layer in module.modules() if isinstance(layer, DCSDConv)]
    for layer in layers:
        layer.backend = backend
    return len(layers)
