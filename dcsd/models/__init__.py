"""ReID models: ResNet50-DCSD and the static baseline, the model zoo and checkpoint loading."""

from .ddf import load_ddf_backbone, read_ddf_checkpoint, read_ddf_weights
from .finetune import init_from
from .heads import BNNeckHead
from .output import ReIDOutput
from .pretrained import (
    CheckpointMismatchError,
    LoadReport,
    download_checkpoint,
    imagenet_state_dict,
    load_imagenet_backbone,
    load_model,
    load_pretrained,
    load_weights,
    model_config_json,
    save_model,
)
from .registry import (
    PretrainedCfg,
    create_model,
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    register_model,
    register_weights,
)
from .resnet import Bottleneck, ReIDResNet, resnet50_dcsd, resnet50_reid

__all__ = [
    "BNNeckHead",
    "Bottleneck",
    "CheckpointMismatchError",
    "LoadReport",
    "PretrainedCfg",
    "ReIDOutput",
    "ReIDResNet",
    "create_model",
    "download_checkpoint",
    "get_pretrained_cfg",
    "imagenet_state_dict",
    "init_from",
    "is_model",
    "list_pretrained",
    "list_models",
    "load_ddf_backbone",
    "load_imagenet_backbone",
    "load_model",
    "load_pretrained",
    "load_weights",
    "model_config_json",
    "read_ddf_checkpoint",
    "read_ddf_weights",
    "register_model",
    "register_weights",
    "resnet50_dcsd",
    "resnet50_reid",
    "save_model",
]
