"""dcsd.kernels: the decoupled dynamic depthwise convolution op (Triton + PyTorch reference).

Knows nothing of ReID: ``decoupled_dwconv2d`` is usable on its own, like DDF's op, and
``mean_and_pointwise_conv`` (a channel mean and a 1x1 convolution of one input, with one input
gradient for both) feeds the generators of a dynamic layer.
"""

from .mean_pointwise import (
    mean_and_pointwise_conv,
    mean_and_pointwise_conv_backward_reference,
    mean_and_pointwise_conv_reference,
)
from .op import BACKENDS, check_backend, decoupled_dwconv2d
from .reference import decoupled_dwconv2d_backward_reference, decoupled_dwconv2d_reference
from .shapes import output_size

__all__ = [
    "BACKENDS",
    "check_backend",
    "decoupled_dwconv2d",
    "decoupled_dwconv2d_backward_reference",
    "decoupled_dwconv2d_reference",
    "mean_and_pointwise_conv",
    "mean_and_pointwise_conv_backward_reference",
    "mean_and_pointwise_conv_reference",
    "output_size",
]
