"""Label-smoothed cross-entropy against values worked out by hand."""

import math

import pytest
import torch

from dcsd.losses import CrossEntropyLabelSmooth


def log_softmax(row):
    log_total = math.log(sum(math.exp(v) for v in row))
    return [v - log_total for v in row]


def test_hand_case_single_row():
    # q = (1 - 0.1) * onehot(2) + 0.1 / 3 over the three classes.
    logits = [1.0, 2.0, 3.0]
    logp = log_softmax(logits)
    q = [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]
    expected = -sum(qk * lk for qk, lk in zip(q, logp, strict=True))
    loss = CrossEntropyLabelSmooth(0.1)(torch.tensor([logits]), torch.tensor([2]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_batch_mean_and_any_number_of_classes():
    loss_fn = CrossEntropyLabelSmooth(0.2)
    for logits, targets in (
        ([[0.0, 0.0], [2.0, -1.0]], [1, 0]),
        ([[0.5, -0.5, 1.0, 0.0, 2.0]], [3]),
    ):
        expected = 0.0
        for row, target in zip(logits, targets, strict=True):
            logp = log_softmax(row)
            num_classes = len(row)
            smoothed = [0.2 / num_classes + (0.8 if k == target else 0.0) for k in range(len(row))]
            expected -= sum(q * lp for q, lp in zip(smoothed, logp, strict=True)) / len(logits)
        loss = loss_fn(torch.tensor(logits), torch.tensor(targets))
        assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_zero_epsilon_is_negative_log_likelihood():
    loss = CrossEntropyLabelSmooth(0.0)(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(-log_softmax([1.0, 2.0, 3.0])[0], abs=1e-6)


def test_gradient_is_softmax_minus_smoothed_target():
    logits = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    CrossEntropyLabelSmooth(0.1)(logits, torch.tensor([2])).backward()
    probs = [math.exp(v) for v in log_softmax([1.0, 2.0, 3.0])]
    q = [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]
    expected = torch.tensor([[p - t for p, t in zip(probs, q, strict=True)]])
    torch.testing.assert_close(logits.grad, expected)


def test_half_precision_logits_give_float32_loss():
    logits = torch.randn(4, 7)
    targets = torch.tensor([0, 6, 3, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CrossEntropyLabelSmooth()(logits.bfloat16(), targets)
    assert loss.dtype == torch.float32
    reference = CrossEntropyLabelSmooth()(logits.bfloat16().float(), targets)
    torch.testing.assert_close(loss, reference)


@pytest.mark.parametrize(
    ("logits", "targets", "error", "match"),
    [
        (torch.zeros(2, 3), torch.tensor([0, 3]), ValueError, r"\[0, 3\).*\[0, 3\]"),
        (torch.zeros(2, 3), torch.tensor([-1, 0]), ValueError, "targets"),
        (torch.zeros(2, 3), torch.tensor([0, 1, 2]), ValueError, r"\(2,\)"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), TypeError, "integer"),
        (torch.zeros(3), torch.tensor([0, 1, 2]), ValueError, "logits"),
    ],
)
def test_validates_inputs(logits, targets, error, match):
    with pytest.raises(error, match=match):
        CrossEntropyLabelSmooth()(logits, targets)


def test_epsilon_range():
    with pytest.raises(ValueError, match="epsilon"):
        CrossEntropyLabelSmooth(1.0)
