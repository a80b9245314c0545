"""The proxy DDF network is saved in DDF's own layout: DDF's model (a transcription of its
published code) loads the file strictly and computes the same features. A start counts as
pretrained once its summary, written after it, exists. A CPU pretraining gives the same start
whatever the caller's torch thread count."""

import sys
from pathlib import Path

import torch
from ddf_transcription import DDFMulResNet50

import dcsd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from pretrain_proxy import (  # noqa: E402
    DDF_FILE,
    PoolConfig,
    dcsd_to_ddf,
    is_pretrained,
    pretrain,
    quick_config,
    starts,
)


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


def test_the_start_does_not_depend_on_the_callers_threads(tmp_path):
    """With one thread and with two, the quick pool's weights differed (other digests) before
    the pretraining pinned its threads; the benchmark's ledger keys runs by that digest."""
    before = torch.get_num_threads()
    summaries = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            summaries.append(
                pretrain(
                    "static_dw", quick_config(), tmp_path / str(threads), torch.device("cpu"), True
                )
            )
            assert torch.get_num_threads() == threads  # the caller's count comes back
    finally:
        torch.set_num_threads(before)
    assert [s["ran_with"]["threads"] for s in summaries] == [1, 1]
    assert summaries[0]["digest"] == summaries[1]["digest"]
