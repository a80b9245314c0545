"""One convention for bad arguments across the package: TypeError for the type, ValueError for
the range, both naming the argument (dcsd.validation serves dcsd; dcsd.kernels keeps its own
checks, so the op library stays usable without dcsd)."""

from pathlib import Path

import numpy as np
import pytest
import torch

import dcsd
from dcsd.data import IdentityBatchSampler
from dcsd.kernels import decoupled_dwconv2d
from dcsd.modules import DCSDConv
from dcsd.validation import check_bool, check_int


def test_check_int_and_check_bool():
    assert check_int("n", np.int64(3), 1) == 3
    assert type(check_int("n", np.int64(3), 1)) is int
    with pytest.raises(TypeError, match="n must be an int, got bool True"):
        check_int("n", True, 0)
    with pytest.raises(TypeError, match="n must be an int, got float 2.0"):
        check_int("n", 2.0, 0)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_int("n", 0, 1)
    with pytest.raises(TypeError, match="flag must be a bool, got int 1"):
        check_bool("flag", 1)


x = torch.zeros(1, 2, 5, 5)
SPATIAL, CHANNEL = torch.zeros(1, 9, 5, 5), torch.zeros(1, 2, 9)


@pytest.mark.parametrize(
    "build",
    [
        lambda v: dcsd.resnet50_reid(num_classes=v),
        lambda v: DCSDConv(8, num_domains=v, num_cameras=2),
        lambda v: IdentityBatchSampler(list(range(8)), num_identities=v, num_instances=1),
        lambda v: decoupled_dwconv2d(x, SPATIAL, CHANNEL, kernel_size=3, stride=v),
    ],
    ids=["model", "layer", "sampler", "op"],
)
def test_same_errors_at_every_boundary(build):
    with pytest.raises(TypeError, match="must be an int, got NoneType"):
        build(None)
    with pytest.raises(ValueError, match="must be >= "):
        build(-1)


def test_numpy_integers_are_plain_ints_to_the_op():
    out = decoupled_dwconv2d(x, SPATIAL, CHANNEL, kernel_size=np.int64(3), stride=np.int64(1))
    assert torch.equal(out, decoupled_dwconv2d(x, SPATIAL, CHANNEL, kernel_size=3, stride=1))


def test_dcsd_does_not_reach_into_the_op_librarys_private_checks():
    package = Path(dcsd.__file__).parent
    importers = [
        path.relative_to(package)
        for path in package.rglob("*.py")
        if "kernels._validation" in path.read_text()
        or "kernels import _validation" in path.read_text()
    ]
    assert importers == []
