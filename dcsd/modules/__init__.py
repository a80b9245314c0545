"""Layers of the DCSD models: the DCSD layer, AGW's non-local block and the pooling layers."""

from .dcsd_conv import (
    FACTORS,
    FILTER_NORMS,
    DCSDConv,
    DCSDConvOutput,
    FilterNorm,
    check_factors,
    check_filter_norm,
    set_op_backend,
)
from .non_local import NonLocalBlock
from .pooling import GeneralizedMeanPooling, GlobalAveragePooling

__all__ = [
    "FACTORS",
    "FILTER_NORMS",
    "DCSDConv",
    "DCSDConvOutput",
    "FilterNorm",
    "GeneralizedMeanPooling",
    "GlobalAveragePooling",
    "NonLocalBlock",
    "check_factors",
    "check_filter_norm",
    "set_op_backend",
]
