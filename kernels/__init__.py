"""dcsd.kernels: the decoupled dynamic depthwise convolution op (Triton + PyTorch reference).

Knows nothing of ReID: ``decoupled_dwconv2d`` is usable on its own, like DDF's op.
"""

from .op import BACKENDS, check_backend, decoupled_dwconv2d
from .reference import decoupled_dwconv2d_backward_reference, decoupled_dwconv2d_reference
from .shapes import output_size

__all__ = [
    "BACKENDS",
    "check_backend",
    "decoupled_dwconv2d",
    "decoupled_dwconv2d_backward_reference",
    "decoupled_dwconv2d_reference",
    "output_size",
]
