"""dcsd: Domain-Camera-Sample Dynamic networks for multi-domain person re-identification."""

from importlib.metadata import PackageNotFoundError, version

from .export import export_onnx, save_exported_program
from .inference import FeatureExtractor, same_person, threshold_at_fpr
from .models import (
    ReIDOutput,
    create_model,
    get_pretrained_cfg,
    list_models,
    list_pretrained,
    load_model,
    resnet50_dcsd,
    resnet50_reid,
)
from .modules import DCSDConv, set_op_backend

try:
    # The installed distribution's version: pyproject.toml is its one definition.
    __version__ = version("dcsd")
except PackageNotFoundError:  # a source checkout on sys.path, never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "DCSDConv",
    "FeatureExtractor",
    "ReIDOutput",
    "create_model",
    "export_onnx",
    "get_pretrained_cfg",
    "list_models",
    "list_pretrained",
    "load_model",
    "resnet50_dcsd",
    "resnet50_reid",
    "same_person",
    "save_exported_program",
    "set_op_backend",
    "threshold_at_fpr",
]
