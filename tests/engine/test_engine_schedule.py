"""BoT's warmup + multi-step schedule."""

import pytest
import torch

from dcsd.engine import build_scheduler, warmup_multistep_factor


def test_factor_warmup_then_steps():
    kwargs = {"iters_per_epoch": 10, "warmup_epochs": 2, "milestones": (4, 6), "gamma": 0.1}
    assert warmup_multistep_factor(0, warmup_factor=0.1, **kwargs) == pytest.approx(0.1)
    assert warmup_multistep_factor(10, warmup_factor=0.1, **kwargs) == pytest.approx(0.55)
    assert warmup_multistep_factor(20, warmup_factor=0.1, **kwargs) == pytest.approx(1.0)
    assert warmup_multistep_factor(39, warmup_factor=0.1, **kwargs) == pytest.approx(1.0)
    assert warmup_multistep_factor(40, warmup_factor=0.1, **kwargs) == pytest.approx(0.1)
    assert warmup_multistep_factor(60, warmup_factor=0.1, **kwargs) == pytest.approx(0.01)


def test_scheduler_steps_per_iteration_and_resumes():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.0)
    scheduler = build_scheduler(optimizer, iters_per_epoch=5, warmup_epochs=1, milestones=(2,))
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5:10] == pytest.approx([1.0] * 5)
    assert lrs[10] == pytest.approx(0.1)
    state = scheduler.state_dict()
    resumed_optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = build_scheduler(
        resumed_optimizer, iters_per_epoch=5, warmup_epochs=1, milestones=(2,)
    )
    resumed.load_state_dict(state)
    for _ in range(3):
        scheduler.step()
        resumed.step()
        assert resumed.get_last_lr() == scheduler.get_last_lr()
    assert resumed.last_epoch == 15


def test_rejects_empty_epoch():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="iters_per_epoch"):
        build_scheduler(optimizer, iters_per_epoch=0)
