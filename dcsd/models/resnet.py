"""ResNet50 ReID models: ResNet50-DCSD and the static BoT / AGW baseline, with one API.

torchvision's ResNet50 layout ("v1.5": stride on the 3x3) and parameter names, so torchvision's
ImageNet weights map one to one. ``resnet50_dcsd`` replaces all 16 bottleneck 3x3 convolutions
by :class:`~dcsd.modules.DCSDConv`; ``resnet50_reid`` keeps them static.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.nn as nn
from huggingface_hub import ModelCard, ModelHubMixin

from dcsd.data.registry import DATASET_NAMES
from dcsd.modules import DCSDConv, DCSDConvOutput, NonLocalBlock
from dcsd.validation import check_int

from .heads import BNNeckHead
from .output import ReIDOutput
from .pretrained import load_model, load_pretrained, model_config_json, save_model
from .registry import PretrainedCfg, get_pretrained_cfg, register_model, register_weights

HEADS = ("bot", "agw")
STAGES = ("layer1", "layer2", "layer3", "layer4")
_LAYERS = (3, 4, 6, 3)
_WIDTHS = (64, 128, 256, 512)
# AGW: non-local blocks after the last 2 blocks of layer2 and the last 3 of layer3.
_AGW_NON_LOCAL = {"layer2": 2, "layer3": 3}
_EXPANSION = 4
_JOINT5_CAMERAS = 32  # 6 + 1 + 8 + 2 + 15 global camera IDs of DATASET_NAMES
PARAMETER_GROUPS = ("backbone", "generators", "information", "heads")
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck with a pluggable 3x3 layer (``conv2``).

    Args:
        inplanes: input channels.
        planes: bottleneck width; the block outputs ``4 * planes`` channels.
        stride: stride of ``conv2`` and of the downsample branch.
        conv2: a static ``nn.Conv2d(planes, planes, 3, stride, 1)`` or a :class:`DCSDConv`.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, conv2: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * _EXPANSION, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * _EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * _EXPANSION:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * _EXPANSION, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * _EXPANSION),
            )

    def _forward(self, x: torch.Tensor, with_logits: bool) -> DCSDConvOutput:
        out = self.relu(self.bn1(self.conv1(x)))
        if with_logits and isinstance(self.conv2, DCSDConv):
            out, domain_logits, camera_logits = self.conv2.forward_with_logits(out)
        else:
            out, domain_logits, camera_logits = self.conv2(out), None, None
        out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return DCSDConvOutput(self.relu(out + identity), domain_logits, camera_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, inplanes, H, W) -> (N, 4 * planes, Ho, Wo)."""
        return self._forward(x, with_logits=False).output

    def forward_with_logits(self, x: torch.Tensor) -> DCSDConvOutput:
        """The block's output with its DCSD layer's domain and camera logits (None if static)."""
        return self._forward(x, with_logits=True)


_MODEL_CARD = """---
{{ card_data }}
---

# {{ architecture }}

A person re-identification model of the `dcsd` library: torchvision's ResNet50 layout with
{{ conv }}, returning a 2048-d embedding after BNNeck.

```python
import torch

import dcsd
from dcsd.data import build_eval_transforms

model = dcsd.load_model("<this repo id or a local copy>").eval()
transform = build_eval_transforms(model.pretrained_cfg)  # resize to {{ input_size }}, normalise
embeddings = model(torch.stack([transform(image) for image in images]))
```

## config.json

```json
{{ config_json }}
```
"""


class ReIDResNet(
    nn.Module,
    ModelHubMixin,
    library_name="dcsd",
    license="apache-2.0",
    tags=["person-re-identification", "dcsd", "pytorch"],
    model_card_template=_MODEL_CARD,
):
    """ResNet50 for person ReID: static (BoT / AGW baseline) or with DCSD layers.

    Build it through :func:`dcsd.create_model` (or a builder such as :func:`resnet50_dcsd`),
    which records the zoo name in ``architecture``. ``pretrained_cfg`` is the card of its
    weights: ``"untrained"`` when freshly built (see :class:`~dcsd.models.PretrainedCfg`).
    In training mode ``forward`` returns a :class:`~dcsd.models.ReIDOutput`; in eval mode the
    (N, 2048) embedding after BNNeck.

    Args:
        dynamic: replace the 16 bottleneck 3x3 convolutions by :class:`DCSDConv`.
        num_classes: training identities; 0 builds no classifier (a feature extractor, which
            refuses a training-mode forward).
        num_domains, num_cameras: classes of the DCSD domain and camera classifiers (the
            paper's five datasets by default: 5 domains, 32 global cameras; build from your data
            with ``**MultiDomainDataset.model_kwargs()``). The static model records them only.
        last_stride: stride of layer4 (1 in ReID: a 16x8 map at 256x128; 2 as on ImageNet).
        head: ``"bot"`` (GAP, BNNeck, bias-free classifier) or ``"agw"`` (non-local blocks in
            layer2/layer3, GeM pooling, BNNeck, bias-free classifier).
        zero_init_residual: start every bottleneck's last BatchNorm at zero, so each residual
            block begins as the identity (Goyal et al., torchvision's option of the same name).
            Only an initialisation (not stored in ``config``; pretrained weights replace it);
            it makes training from scratch far faster. Off by default, as in torchvision.
        **dcsd_options: options of every :class:`DCSDConv` (``factors``, ``stop_gradient``,
            ``detach_information_input``, ``filter_norm``, ``spatial_information``, stored in
            ``config``; ``backend``, a runtime choice that is not),
            with :class:`DCSDConv`'s defaults; refused by the static model.
    """

    def __init__(
        self,
        *,
        dynamic: bool,
        num_classes: int = 0,
        num_domains: int = 5,
        num_cameras: int = _JOINT5_CAMERAS,
        last_stride: int = 1,
        head: str = "bot",
        zero_init_residual: bool = False,
        **dcsd_options: Any,
    ) -> None:
        super().__init__()
        check_int("num_classes", num_classes, 0)
        check_int("num_domains", num_domains, 1)
        check_int("num_cameras", num_cameras, 1)
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        _check_dcsd_options(dynamic, dcsd_options)
        # The zoo name (a registered builder sets its own, create_reid_resnet; a model built
        # directly is one of the two stock architectures) and the card of untrained weights.
        self.architecture = "resnet50_dcsd" if dynamic else "resnet50_reid"
        self.pretrained_cfg = PretrainedCfg()
        self.dynamic = dynamic
        self.num_domains = num_domains
        self.num_cameras = num_cameras
        self.last_stride = last_stride
        self.head_type = head
        self.num_features = _WIDTHS[-1] * _EXPANSION

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (stage, blocks, planes) in enumerate(zip(STAGES, _LAYERS, _WIDTHS, strict=True)):
            stride = 1 if index == 0 else (last_stride if stage == "layer4" else 2)
            layer = []
            for block in range(blocks):
                block_stride = stride if block == 0 else 1
                if dynamic:
                    conv2 = DCSDConv(
                        planes,
                        3,
                        block_stride,
                        num_domains=num_domains,
                        num_cameras=num_cameras,
                        **dcsd_options,
                    )
                else:
                    conv2 = nn.Conv2d(planes, planes, 3, block_stride, padding=1, bias=False)
                layer.append(Bottleneck(inplanes, planes, block_stride, conv2))
                inplanes = planes * _EXPANSION
            setattr(self, stage, nn.Sequential(*layer))
        self._init_backbone(zero_init_residual)

        self.non_local = nn.ModuleDict()
        if head == "agw":
            for stage, count in _AGW_NON_LOCAL.items():
                blocks = len(getattr(self, stage))
                channels = getattr(self, stage)[0].bn3.num_features
                for block in range(blocks - count, blocks):
                    self.non_local[f"{stage}_{block}"] = NonLocalBlock(channels)
        self.head = BNNeckHead(
            self.num_features, num_classes, pooling="gem" if head == "agw" else "avg"
        )

    @property
    def _first_dcsd_layer(self) -> DCSDConv:
        return self.layer1[0].conv2

    @property
    def factors(self) -> tuple[str, ...]:
        """The DCSD factors (empty for the static model)."""
        return self._first_dcsd_layer.factors if self.dynamic else ()

    @property
    def stop_gradient(self) -> bool | None:
        """Whether D and Cam are detached (None for the static model)."""
        return self._first_dcsd_layer.stop_gradient if self.dynamic else None

    @property
    def detach_information_input(self) -> bool | None:
        """Whether the domain and camera MLPs read GAP(X) detached, keeping their classifiers'
        losses off the backbone (None for the static model)."""
        return self._first_dcsd_layer.detach_information_input if self.dynamic else None

    @property
    def filter_norm(self) -> str | None:
        """The DCSD filter normalisation (None for the static model)."""
        return self._first_dcsd_layer.filter_norm if self.dynamic else None

    @property
    def spatial_information(self) -> bool | None:
        """Whether the spatial branch reads X + D + Cam (None for the static model)."""
        return self._first_dcsd_layer.spatial_information if self.dynamic else None

    def _init_backbone(self, zero_init_residual: bool) -> None:
        """torchvision's ResNet initialisation; each DCSD layer initialises its own generators
        (:meth:`DCSDConv.reset_parameters`)."""
        dcsd_parts = {
            id(part)
            for layer in self.modules()
            if isinstance(layer, DCSDConv)
            for part in layer.modules()
        }
        for part in (self.conv1, self.bn1, *(getattr(self, stage) for stage in STAGES)):
            for module in part.modules():
                if id(module) in dcsd_parts:
                    continue
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        if zero_init_residual:
            for block in self.modules():
                if isinstance(block, Bottleneck):
                    nn.init.zeros_(block.bn3.weight)

    @property
    def num_classes(self) -> int:
        """Identities of the classifier (0: none)."""
        return self.head.num_classes

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable architecture: the zoo name and the builder options that shape the
        weights and the forward (the op ``backend`` is a runtime choice and is left out)."""
        config: dict[str, Any] = {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "num_domains": self.num_domains,
            "num_cameras": self.num_cameras,
            "last_stride": self.last_stride,
            "head": self.head_type,
        }
        if self.dynamic:
            config |= {
                "factors": list(self.factors),
                "stop_gradient": self.stop_gradient,
                "detach_information_input": self.detach_information_input,
                "filter_norm": self.filter_norm,
                "spatial_information": self.spatial_information,
            }
        return config

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The model's parameters by role (timm's ``group_matcher``, as a partition): what
        :func:`dcsd.engine.build_optimizer` and training policies (freezing, learning-rate
        factors) ask instead of naming the model's layers.

        Returns:
            ``{"backbone", "generators", "information", "heads"}`` -> parameters, in
            ``parameters()`` order, disjoint and covering every parameter (trainable or not):
            ``generators`` are the DCSD filter generators (channel and spatial branches and
            their FilterNorm scales), ``information`` the DCSD domain and camera MLPs,
            ``heads`` the BNNeck head (pooling, BNNeck, identity classifier) and the DCSD
            domain and camera classifiers, ``backbone`` everything else (stem, bottlenecks,
            non-local blocks, the static filters of ``filter_norm="gate"``). The DCSD groups
            are empty for the static model.
        """
        role: dict[int, str] = {}
        for layer in self.modules():
            if isinstance(layer, DCSDConv):
                for key, parameters in layer.parameter_groups().items():
                    role |= {id(parameter): key for parameter in parameters}
        role |= {id(parameter): "heads" for parameter in self.head.parameters()}
        groups: dict[str, list[nn.Parameter]] = {key: [] for key in PARAMETER_GROUPS}
        for parameter in self.parameters():
            groups[role.get(id(parameter), "backbone")].append(parameter)
        return groups

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that take the normalisation weight decay (timm's
        ``no_weight_decay``): every parameter of a BatchNorm, every bias and what each DCSD
        layer names (:meth:`DCSDConv.no_weight_decay`: its FilterNorm scales)."""
        names: set[str] = set()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            names |= {
                prefix + name
                for name, _ in module.named_parameters(recurse=False)
                if isinstance(module, _NORMS) or name == "bias"
            }
            if isinstance(module, DCSDConv):
                names |= {prefix + name for name in module.no_weight_decay()}
        return names

    def heads(self) -> dict[str, int]:
        """Head name -> output size of the classifiers the model trains: ``"identity"``
        (``num_classes``; 0 when the model has no classifier) and, for DCSD models with those
        factors, ``"domain"`` and ``"camera"`` (e.g. ``{"identity": 751, "domain": 5,
        "camera": 38}``)."""
        heads: dict[str, int] = {"identity": self.num_classes}
        if self.dynamic:
            layer = self._first_dcsd_layer
            for name, size in (("domain", layer.num_domains), ("camera", layer.num_cameras)):
                if size is not None:
                    heads[name] = size
        return heads

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the identity classifier by a fresh one with ``num_classes`` outputs (0: none)."""
        self.head.reset_classifier(num_classes)

    def reset_heads(
        self,
        num_classes: int | None = None,
        num_domains: int | None = None,
        num_cameras: int | None = None,
    ) -> dict[str, tuple[int, int]]:
        """Size the heads for other training data (fine-tuning): each head whose size differs
        is rebuilt fresh; the backbone, the DCSD filter generators and the domain and camera
        MLPs are kept (see :meth:`parameter_groups`).

        Pass ``**data.model_kwargs()`` of a :class:`dcsd.data.MultiDomainDataset`; then
        :func:`dcsd.engine.check_model_fits_data` accepts the model for that data. ``None``
        keeps a size. The static model has no domain or camera heads: it records the sizes
        (``config``) and drops nothing for them.

        Returns:
            ``{head name: (old size, new size)}`` of the heads rebuilt, whose trained weights
            are gone (``"identity"``, ``"domain"``, ``"camera"``, as :meth:`heads`); empty when
            every head already fits.

        Raises:
            ValueError: a size below its minimum (``num_classes`` >= 0, the others >= 1).
        """
        for name, size, minimum in (
            ("num_classes", num_classes, 0),
            ("num_domains", num_domains, 1),
            ("num_cameras", num_cameras, 1),
        ):
            if size is not None:
                check_int(name, size, minimum)
        before = self.heads()
        dropped: dict[str, tuple[int, int]] = {}
        if num_classes is not None and num_classes != self.num_classes:
            self.reset_classifier(num_classes)
            dropped["identity"] = (before["identity"], num_classes)
        for head, size in (("domain", num_domains), ("camera", num_cameras)):
            if size is None:
                continue
            setattr(self, f"num_{head}s", size)
            if head in before and before[head] != size:
                for layer in self.modules():
                    if isinstance(layer, DCSDConv):
                        layer.reset_classifiers(**{f"num_{head}s": size})
                dropped[head] = (before[head], size)
        return dropped

    def _forward_backbone(
        self, images: torch.Tensor, with_logits: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                f"images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}: "
                "convert with torch.from_numpy(...) and normalise with pretrained_cfg's mean/std"
            )
        expected = self.conv1.weight.dtype
        # Only a dtype mismatch needs the autocast question (which meta tensors cannot answer).
        if images.dtype != expected and not (
            images.is_floating_point() and torch.is_autocast_enabled(images.device.type)
        ):
            hint = (
                " (integer pixels: use images.float() / 255, then normalise with "
                "pretrained_cfg's mean/std, as dcsd.data.build_test_transforms does)"
                if not images.is_floating_point()
                else f" (convert with images.to({expected}), or run under torch.autocast)"
            )
            raise TypeError(
                f"images must be normalised {expected} images like the model's weights, got "
                f"{images.dtype}{hint}"
            )
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        domain_logits: list[torch.Tensor] = []
        camera_logits: list[torch.Tensor] = []
        for stage in STAGES:
            for index, block in enumerate(getattr(self, stage)):
                if with_logits:
                    x, domain, camera = block.forward_with_logits(x)
                    if domain is not None:
                        domain_logits.append(domain)
                    if camera is not None:
                        camera_logits.append(camera)
                else:
                    x = block(x)
                key = f"{stage}_{index}"
                if key in self.non_local:
                    x = self.non_local[key](x)
        return x, tuple(domain_logits), tuple(camera_logits)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) -> layer4 feature map (N, 2048, H/16, W/16) at last stride 1."""
        return self._forward_backbone(images, with_logits=False)[0]

    def forward(self, images: torch.Tensor) -> ReIDOutput | torch.Tensor:
        """images: (N, 3, H, W), normalised with ``pretrained_cfg.mean`` / ``std``.

        Returns:
            Training mode: ``ReIDOutput(features (N, 2048) before BNNeck, logits
            (N, num_classes), domain_logits, camera_logits)``, one (N, num_domains) /
            (N, num_cameras) tensor per DCSD layer whose factor is on (16 each; empty for the
            static model). Eval mode: the (N, 2048) embedding after BNNeck, to L2-normalise
            for retrieval.

        Raises:
            RuntimeError: training-mode forward of a model without classifier (num_classes=0).
        """
        if self.training and self.head.classifier is None:
            raise RuntimeError(
                "this model has no identity classifier (num_classes=0), so it only embeds in "
                "eval mode: call model.eval(), or model.reset_classifier(num_identities) to train"
            )
        feature_map, domain_logits, camera_logits = self._forward_backbone(images, self.training)
        features, embedding = self.head(feature_map)
        if not self.training:
            return embedding
        return ReIDOutput(features, self.head.classifier(embedding), domain_logits, camera_logits)

    def _save_pretrained(self, save_directory: os.PathLike) -> None:
        save_model(self, save_directory)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The README.md that :meth:`save_pretrained` and :meth:`push_to_hub` write."""
        conv = (
            "its 16 bottleneck 3x3 convolutions replaced by DCSD layers"
            if self.dynamic
            else ("static 3x3 convolutions (the BoT / AGW baseline)")
        )
        return super().generate_model_card(
            *args,
            architecture=self.config["architecture"],
            conv=conv,
            input_size="x".join(map(str, self.pretrained_cfg.input_size[1:])),
            config_json=json.dumps(model_config_json(self), indent=2, sort_keys=True),
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        **model_kwargs: Any,
    ) -> ReIDResNet:
        """Load a model saved by :meth:`save_pretrained` from a folder or a Hub repo id
        (same as :func:`dcsd.load_model`); ``model_kwargs`` override the saved config."""
        return load_model(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
            **model_kwargs,
        )


def create_reid_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> ReIDResNet:
    """Build the architecture ``variant`` (timm's ``build_model_with_cfg``): the one place where
    a :class:`ReIDResNet` gets its zoo name (``architecture``, saved in ``config.json``), then,
    with ``pretrained``, the variant's default weights in the zoo.

    A variant is a registered builder that calls this with its name and its own defaults, e.g.
    ``create_reid_resnet("resnet50_dcsd_s", pretrained, **{"dynamic": True,
    "factors": ("sample",), **kwargs})``.

    Args:
        variant: the registered name.
        pretrained: load the variant's default weights (see :func:`dcsd.create_model`).
        **kwargs: :class:`ReIDResNet` options.
    """
    if not isinstance(pretrained, bool):
        raise TypeError(
            f"pretrained must be True or False, got {type(pretrained).__name__} {pretrained!r}: "
            "a local folder is dcsd.load_model(folder) or dcsd.create_model(name, "
            "checkpoint_path=folder), the ImageNet backbone dcsd.models.load_imagenet_backbone"
        )
    model = ReIDResNet(**kwargs)
    model.architecture = variant
    if pretrained:
        load_pretrained(model, get_pretrained_cfg(variant).name)
    return model


@register_model
def resnet50_dcsd(pretrained: bool = False, **kwargs: Any) -> ReIDResNet:
    """ResNet50-DCSD: every bottleneck 3x3 conv is a :class:`DCSDConv` (16 layers).

    Args:
        pretrained: load the default weights of the zoo, ``resnet50_dcsd.joint5``.
        **kwargs: :class:`ReIDResNet` options (``num_classes``, ``num_domains``,
            ``num_cameras``, ``last_stride``, ``head``, ``zero_init_residual``) and the DCSD
            layer options (``factors``, ``stop_gradient``, ``detach_information_input``,
            ``filter_norm``, ``spatial_information``, ``backend``).
    """
    return create_reid_resnet("resnet50_dcsd", pretrained, dynamic=True, **kwargs)


@register_model
def resnet50_reid(pretrained: bool = False, **kwargs: Any) -> ReIDResNet:
    """Static ResNet50 ReID baseline (BoT with ``head="bot"``, AGW with ``head="agw"``).

    Same API and outputs as :func:`resnet50_dcsd`, with torchvision's 3x3 convolutions;
    ``num_domains`` and ``num_cameras`` are accepted (so one call builds either model) and
    recorded, and its ``domain_logits`` / ``camera_logits`` are empty. DCSD layer options are
    refused. ``pretrained``: load ``resnet50_reid.joint5``.
    """
    return create_reid_resnet("resnet50_reid", pretrained, dynamic=False, **kwargs)


# The zoo's weights: joint training on the paper's five datasets in its domain order. None are
# published yet (published=False); each keeps the paper's Table II mAPs as paper_metrics, a
# target, and no measured metrics.
register_weights(
    PretrainedCfg(
        name="resnet50_dcsd.joint5",
        hub_id="dcsd/resnet50_dcsd.joint5",
        datasets=DATASET_NAMES,
        num_cameras=_JOINT5_CAMERAS,
        paper_metrics={
            "cuhk03": {"mAP": 78.0},
            "cuhksysu": {"mAP": 91.3},
            "market1501": {"mAP": 89.5},
            "dukemtmc": {"mAP": 80.6},
            "msmt17": {"mAP": 61.5},
        },
    )
)
register_weights(
    PretrainedCfg(
        name="resnet50_reid.joint5",
        hub_id="dcsd/resnet50_reid.joint5",
        datasets=DATASET_NAMES,
        num_cameras=_JOINT5_CAMERAS,
        paper_metrics={
            "cuhk03": {"mAP": 65.7},
            "cuhksysu": {"mAP": 89.3},
            "market1501": {"mAP": 84.6},
            "dukemtmc": {"mAP": 75.9},
            "msmt17": {"mAP": 49.5},
        },
    )
)


_DCSD_OPTIONS = (
    "factors",
    "stop_gradient",
    "detach_information_input",
    "filter_norm",
    "spatial_information",
    "backend",
)


def _check_dcsd_options(dynamic: bool, options: dict[str, Any]) -> None:
    for name in options:
        if name not in _DCSD_OPTIONS:
            raise TypeError(f"ReIDResNet got an unexpected keyword argument {name!r}")
        if not dynamic:
            raise TypeError(
                f"the static model got an unexpected keyword argument {name!r} (a DCSD layer "
                "option; build resnet50_dcsd to use it)"
            )
