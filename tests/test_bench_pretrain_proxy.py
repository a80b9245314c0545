"""The proxy DDF network is saved in DDF's own layout: DDF's model (a transcription of its
published code) loads the file strictly and computes the same features. A start counts as
pretrained once its summary, written after it, exists."""

import sys
from pathlib import Path

import torch
from ddf_transcription import DDFMulResNet50

import dcsd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from pretrain_proxy import DDF_FILE, PoolConfig, dcsd_to_ddf, is_pretrained, starts  # noqa: E402


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


def test_a_start_without_its_summary_is_not_pretrained(tmp_path):
    """A pretraining stopped while writing its start (a --deadline) leaves the file but no
    summary: the benchmark pretrains it again instead of loading half a file."""
    config = PoolConfig()
    path = starts(config, tmp_path)["proxy_ddf"]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a checkpoint")
    assert path.name == DDF_FILE and not is_pretrained(config, tmp_path, "proxy_ddf")
    (path.parent / "ddf.json").write_text("{}")
    assert is_pretrained(config, tmp_path, "proxy_ddf")
    assert not is_pretrained(config, tmp_path, "proxy_static")
