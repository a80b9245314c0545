"""AGW's non-local block and the pooling layers."""

import pytest
import torch

from dcsd.modules import GeneralizedMeanPooling, GlobalAveragePooling, NonLocalBlock


def test_non_local_block_starts_as_identity_and_learns():
    torch.manual_seed(0)
    block = NonLocalBlock(8)
    x = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    with torch.no_grad():
        block.out_bn.weight.fill_(1.0)
    block.eval()
    y = block(x)
    assert y.shape == x.shape and not torch.allclose(y, x)


def test_non_local_block_matches_its_formula():
    torch.manual_seed(0)
    block = NonLocalBlock(6, inter_channels=3).eval()
    with torch.no_grad():
        block.out_bn.weight.fill_(1.0)
    x = torch.randn(2, 6, 4, 3)
    theta = block.theta(x).flatten(2)
    phi = block.phi(x).flatten(2)
    g = block.g(x).flatten(2)
    affinity = torch.einsum("nip,niq->npq", theta, phi) / 12
    y = torch.einsum("npq,niq->nip", affinity, g).view(2, 3, 4, 3)
    expected = x + block.out_bn(block.out_conv(y))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


def test_gem_pooling_interpolates_average_and_max():
    x = torch.rand(2, 4, 6, 5) + 0.1
    gem = GeneralizedMeanPooling(p=1.0)
    torch.testing.assert_close(gem(x), GlobalAveragePooling()(x))
    large = GeneralizedMeanPooling(p=200.0)
    torch.testing.assert_close(large(x), x.amax(dim=(2, 3)), rtol=2e-2, atol=0)
    default = GeneralizedMeanPooling()
    assert default.p.requires_grad and default.p.item() == 3.0
    default(x).sum().backward()
    assert default.p.grad is not None


def test_invalid_layer_arguments():
    with pytest.raises(ValueError, match="inter_channels"):
        NonLocalBlock(8, inter_channels=0)
    with pytest.raises(ValueError, match="p must be a positive number"):
        GeneralizedMeanPooling(p=0)
