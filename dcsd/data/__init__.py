"""Datasets, multi-domain composition, identity sampling and transforms for ReID training.

Real datasets (:func:`build_dataset`) read each benchmark's own folder layout; the synthetic
domains (:func:`make_synthetic_domains`) need no download and are what examples and tests use.
"""

from .base import ReIDDataset, ReIDItem
from .cuhk03 import CUHK03
from .cuhksysu import CUHKSYSU
from .dukemtmc import DukeMTMCreID
from .image_dataset import ImageDataset, check_images, read_image
from .market1501 import Market1501
from .market_style import MarketStyleDataset
from .msmt17 import MSMT17
from .multi_domain import DomainItem, MultiDomainDataset
from .registry import DATASET_NAMES, build_dataset, list_datasets, register_dataset
from .sampler import IdentityBatchSampler
from .synthetic import default_synthetic_root, make_synthetic_domains
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transforms,
    build_test_transforms,
    build_train_transforms,
)
from .validation import holdout_identities

__all__ = [
    "CUHK03",
    "CUHKSYSU",
    "DATASET_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MSMT17",
    "DomainItem",
    "DukeMTMCreID",
    "IdentityBatchSampler",
    "ImageDataset",
    "Market1501",
    "MarketStyleDataset",
    "MultiDomainDataset",
    "ReIDDataset",
    "ReIDItem",
    "build_dataset",
    "build_eval_transforms",
    "build_test_transforms",
    "build_train_transforms",
    "check_images",
    "read_image",
    "default_synthetic_root",
    "holdout_identities",
    "list_datasets",
    "make_synthetic_domains",
    "register_dataset",
]
