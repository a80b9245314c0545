"""Plain-PyTorch decoupled dynamic depthwise convolution: the CPU path and the test oracle.

Both functions sum K*K shifted, strided slices of the zero-padded input instead of unfolding it,
so their memory stays O(N*C*Ho*Wo) rather than K*K times that. They accumulate in at least
float32 and return the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .shapes import accumulation_dtype, output_size


def _tap_slices(
    kernel_size: int, stride: int, dilation: int, height_out: int, width_out: int
) -> list[tuple[int, slice, slice]]:
    """(tap index, row slice, column slice) into the padded input for every filter tap."""
    taps = []
    for i in range(kernel_size):
        for j in range(kernel_size):
            rows = slice(i * dilation, i * dilation + stride * (height_out - 1) + 1, stride)
            cols = slice(j * dilation, j * dilation + stride * (width_out - 1) + 1, stride)
            taps.append((i * kernel_size + j, rows, cols))
    return taps


def decoupled_dwconv2d_reference(
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
    dilation: int = 1,
) -> torch.Tensor:
    """Reference forward, differentiable through autograd.

    out[n,c,h,w] = sum_{i,j} x[n,c,h*s+i*d-p,w*s+j*d-p] * spatial[n,i*K+j,h,w] * channel[n,c,i*K+j]

    Args:
        x: (N, C, H, W) input.
        spatial: (N, K*K, Ho, Wo) one filter per output position, shared by all channels.
        channel: (N, C, K*K) one filter per channel, shared by all positions.
        kernel_size: K (odd).
        stride, padding, dilation: as for ``torch.nn.functional.conv2d``; ``padding=None`` means
            ``dilation * (K - 1) // 2`` ("same" size at stride 1).

    Returns:
        (N, C, Ho, Wo), contiguous, in the dtype of ``x``. Inputs are not validated: use
        :func:`dcsd.kernels.decoupled_dwconv2d` for checked calls.
    """
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    height_out, width_out = output_size(
        x.shape[2], x.shape[3], kernel_size, stride, padding, dilation
    )
    acc_dtype = accumulation_dtype(x.dtype)
    x_padded = F.pad(x.to(acc_dtype), (padding, padding, padding, padding))
    spatial = spatial.to(acc_dtype)
    channel = channel.to(acc_dtype)
    out = x_padded.new_zeros(x.shape[0], x.shape[1], height_out, width_out)
    for tap, rows, cols in _tap_slices(kernel_size, stride, dilation, height_out, width_out):
        weight = spatial[:, tap, None] * channel[:, :, tap, None, None]
        out = out + x_padded[:, :, rows, cols] * weight
    return out.to(x.dtype).contiguous()


def decoupled_dwconv2d_backward_reference(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    spatial: torch.Tensor,
    channel: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference gradients (dx, dspatial, dchannel) written out explicitly.

    dx scatters ``grad_out * spatial * channel`` back onto the input taps; dspatial reduces
    ``grad_out * channel * x_tap`` over channels; dchannel reduces ``grad_out * spatial * x_tap``
    over output positions. Shapes and dtypes match the corresponding inputs.
    """
    height, width = x.shape[2], x.shape[3]
    height_out, width_out = grad_out.shape[2], grad_out.shape[3]
    acc_dtype = accumulation_dtype(x.dtype)
    grad = grad_out.to(acc_dtype)
    x_padded = F.pad(x.to(acc_dtype), (padding, padding, padding, padding))
    spatial_acc = spatial.to(acc_dtype)
    channel_acc = channel.to(acc_dtype)
    grad_x_padded = torch.zeros_like(x_padded)
    grad_spatial = torch.empty_like(spatial_acc)
    grad_channel = torch.empty_like(channel_acc)
    for tap, rows, cols in _tap_slices(kernel_size, stride, dilation, height_out, width_out):
        x_tap = x_padded[:, :, rows, cols]
        spatial_tap = spatial_acc[:, tap, None]
        channel_tap = channel_acc[:, :, tap, None, None]
        grad_x_padded[:, :, rows, cols] += grad * spatial_tap * channel_tap
        grad_spatial[:, tap] = (grad * channel_tap * x_tap).sum(dim=1)
        grad_channel[:, :, tap] = (grad * spatial_tap * x_tap).sum(dim=(2, 3))
    grad_x = grad_x_padded[:, :, padding : padding + height, padding : padding + width]
    return (
        grad_x.to(x.dtype).contiguous(),
        grad_spatial.to(spatial.dtype),
        grad_channel.to(channel.dtype),
    )
