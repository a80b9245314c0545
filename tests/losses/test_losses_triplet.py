"""Triplet losses against values worked out by hand from their definitions."""

import math

import pytest
import torch

from dcsd.losses import TripletLoss, WeightedRegularizationTriplet, euclidean_distance_matrix

# Four points on a line, two identities: every pairwise distance is |x_i - x_j|.
POINTS = [0.0, 1.0, 3.0, 7.0]
PIDS = torch.tensor([0, 0, 1, 1])


def line_features(points=POINTS, requires_grad=False):
    return torch.tensor(points, dtype=torch.float32).unsqueeze(1).requires_grad_(requires_grad)


def softplus(x):
    return math.log1p(math.exp(x))


def test_distance_matrix_is_euclidean_with_guarded_diagonal():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    dist = euclidean_distance_matrix(x)
    expected = torch.tensor([[0.0, 5.0, 1.0], [5.0, 0.0, math.sqrt(20)], [1.0, math.sqrt(20), 0.0]])
    torch.testing.assert_close(dist, expected, atol=1e-5, rtol=1e-6)
    # The diagonal sits at the clamp (sqrt(1e-12)), so its gradient is 0, not inf / NaN.
    x.requires_grad_(True)
    euclidean_distance_matrix(x).diagonal().sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_batch_hard_hand_case():
    # Hardest positive / negative per anchor: 0: (1, 3), 1: (1, 2), 3: (4, 2), 7: (4, 6).
    # Only the anchor at 3 violates the margin: 4 - 2 + 0.3 = 2.3, mean over 4 anchors.
    loss = TripletLoss(margin=0.3)(line_features(), PIDS)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(2.3 / 4, abs=1e-6)


def test_batch_hard_margin_changes_active_anchors():
    # margin 1.5: anchor 0: 1-3+1.5 = -0.5 (0), anchor 1: 1-2+1.5 = 0.5, anchor 3: 3.5, anchor 7: 0
    loss = TripletLoss(margin=1.5)(line_features(), PIDS)
    assert loss.item() == pytest.approx((0.5 + 3.5) / 4, abs=1e-6)


def test_soft_margin_hand_case():
    expected = (softplus(1 - 3) + softplus(1 - 2) + softplus(4 - 2) + softplus(4 - 6)) / 4
    loss = TripletLoss(soft_margin=True)(line_features(), PIDS)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_batch_hard_gradient_hand_case():
    # Only the anchor at x2=3 is active: loss = (|x3 - x2| - |x2 - x1| + 0.3) / 4.
    x = line_features(requires_grad=True)
    TripletLoss(margin=0.3)(x, PIDS).backward()
    torch.testing.assert_close(x.grad.squeeze(1), torch.tensor([0.0, 0.25, -0.5, 0.25]))


def test_single_identity_batch_gives_zero_loss_and_finite_grad():
    x = torch.randn(4, 3, requires_grad=True)
    for loss_fn in (TripletLoss(), TripletLoss(soft_margin=True), WeightedRegularizationTriplet()):
        loss = loss_fn(x, torch.zeros(4, dtype=torch.long))
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(x.grad).all()


def test_duplicate_features_give_finite_gradients():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    for loss_fn in (TripletLoss(), TripletLoss(soft_margin=True), WeightedRegularizationTriplet()):
        x.grad = None
        loss_fn(x, torch.tensor([0, 0, 1, 1])).backward()
        assert torch.isfinite(x.grad).all()


def test_weighted_regularization_triplet_hand_case():
    # For each anchor: softmax-over-distance weights on positives (itself included, distance 0)
    # and softmax-over-negated-distance weights on negatives; loss = softplus(pos - neg).
    expected = 0.0
    for i, xi in enumerate(POINTS):
        pos = [abs(xi - xj) for j, xj in enumerate(POINTS) if PIDS[j] == PIDS[i]]
        neg = [abs(xi - xj) for j, xj in enumerate(POINTS) if PIDS[j] != PIDS[i]]
        weighted_pos = sum(d * math.exp(d) for d in pos) / sum(math.exp(d) for d in pos)
        weighted_neg = sum(d * math.exp(-d) for d in neg) / sum(math.exp(-d) for d in neg)
        expected += softplus(weighted_pos - weighted_neg) / len(POINTS)
    loss = WeightedRegularizationTriplet()(line_features(), PIDS)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_weighted_regularization_triplet_explicit_numbers():
    # Two points per identity at distance 2 apart, identities 10 apart: every anchor sees
    # positives {0, 2} and negatives {10, 12} (or {8, 10}); hand-evaluated for the anchor at 0.
    x = line_features([0.0, 2.0, 10.0, 12.0])
    pos = (0 * 1 + 2 * math.exp(2)) / (1 + math.exp(2))
    neg_outer = (10 * math.exp(-10) + 12 * math.exp(-12)) / (math.exp(-10) + math.exp(-12))
    neg_inner = (8 * math.exp(-8) + 10 * math.exp(-10)) / (math.exp(-8) + math.exp(-10))
    expected = (2 * softplus(pos - neg_outer) + 2 * softplus(pos - neg_inner)) / 4
    loss = WeightedRegularizationTriplet()(x, PIDS)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_weighted_triplet_gradients_flow():
    x = torch.randn(8, 5, requires_grad=True)
    WeightedRegularizationTriplet()(x, torch.arange(4).repeat_interleave(2)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_low_precision_input_computes_in_float32():
    x = torch.randn(8, 16)
    pids = torch.arange(4).repeat_interleave(2)
    reference = TripletLoss()(x.bfloat16().float(), pids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = TripletLoss()(x.bfloat16(), pids)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference)


@pytest.mark.parametrize(
    ("features", "pids", "error", "match"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), ValueError, "features"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), ValueError, r"pids.*\(4,\)"),
        (torch.zeros(4, 2), torch.zeros(4), TypeError, "pids"),
        (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long), TypeError, "float"),
    ],
)
def test_triplet_validates_inputs(features, pids, error, match):
    with pytest.raises(error, match=match):
        TripletLoss()(features, pids)


def test_negative_margin_rejected():
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-0.1)
