"""The proxy DDF network is saved in DDF's own layout: DDF's model (a transcription of its
published code) loads the file strictly and computes the same features."""

import sys
from pathlib import Path

import torch
from ddf_transcription import DDFMulResNet50

import dcsd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from pretrain_proxy import dcsd_to_ddf  # noqa: E402


def test_saved_ddf_layout_is_ddfs_own():
    torch.manual_seed(0)
    model = dcsd.resnet50_dcsd(
        num_classes=7, factors=("sample",), filter_norm="ddf", last_stride=2, backend="reference"
    ).eval()
    ddf = DDFMulResNet50(num_classes=7)
    ddf.load_state_dict(dcsd_to_ddf(model.state_dict()), strict=True)
    ddf.eval()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            ddf.forward_features(images), model.forward_features(images), rtol=0, atol=1e-5
        )
