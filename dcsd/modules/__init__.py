"""Layers of the DCSD models: the DCSD layer, AGW's non-local block and the pooling layers."""

from .dcsd_conv import FACTORS, DCSDConv, DCSDConvOutput, FilterNorm, check_factors, set_op_backend
from .non_local import NonLocalBlock
from .pooling import GeneralizedMeanPooling, GlobalAveragePooling

__all__ = [
    "FACTORS",
    "DCSDConv",
    "DCSDConvOutput",
    "FilterNorm",
    "GeneralizedMeanPooling",
    "GlobalAveragePooling",
    "NonLocalBlock",
    "check_factors",
    "set_op_backend",
]
