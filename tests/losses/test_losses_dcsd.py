"""The DCSD objective (paper Eq. 5) against its parts worked out by hand."""

import math

import pytest
import torch

from dcsd.losses import DCSDLoss, WeightedRegularizationTriplet
from dcsd.models.output import ReIDOutput

FEATURES = [[0.0], [1.0], [3.0], [7.0]]
PIDS = torch.tensor([0, 0, 1, 1])
DOMAINS = torch.tensor([0, 0, 1, 1])
CAMIDS = torch.tensor([0, 1, 2, 2])
TRIPLET = 2.3 / 4  # batch-hard on the line points (see test_losses_triplet.py)


def cross_entropy(rows, targets, epsilon=0.0):
    total = 0.0
    for row, target in zip(rows, targets, strict=True):
        log_total = math.log(sum(math.exp(v) for v in row))
        for k, value in enumerate(row):
            q = epsilon / len(row) + (1 - epsilon if k == target else 0.0)
            total -= q * (value - log_total)
    return total / len(rows)


ID_LOGITS = [[2.0, 0.0], [1.0, 0.5], [0.0, 1.0], [-1.0, 3.0]]
DOMAIN_LOGITS = (
    [[1.0, 0.0], [0.0, 0.0], [0.0, 2.0], [1.0, 1.0]],
    [[3.0, 0.0], [0.5, 0.0], [0.0, -1.0], [0.0, 0.0]],
)
CAMERA_LOGITS = (
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
    [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 4.0]],
    [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]],
)


def make_output(domain=DOMAIN_LOGITS, camera=CAMERA_LOGITS, requires_grad=False):
    def tensor(values):
        return torch.tensor(values).requires_grad_(requires_grad)

    return ReIDOutput(
        features=tensor(FEATURES),
        logits=tensor(ID_LOGITS),
        domain_logits=tuple(tensor(v) for v in domain),
        camera_logits=tuple(tensor(v) for v in camera),
    )


def test_eq5_hand_case():
    total, parts = DCSDLoss()(make_output(), PIDS, DOMAINS, CAMIDS)
    expected_id = cross_entropy(ID_LOGITS, PIDS.tolist(), epsilon=0.1)
    domain_ce = [cross_entropy(v, DOMAINS.tolist()) for v in DOMAIN_LOGITS]
    camera_ce = [cross_entropy(v, CAMIDS.tolist()) for v in CAMERA_LOGITS]
    # The layer terms are means over layers (1/B sum_b), not sums.
    expected_domain = sum(domain_ce) / 2
    expected_camera = sum(camera_ce) / 3
    assert parts["id"].item() == pytest.approx(expected_id, abs=1e-6)
    assert parts["triplet"].item() == pytest.approx(TRIPLET, abs=1e-6)
    assert parts["domain"].item() == pytest.approx(expected_domain, abs=1e-6)
    assert parts["camera"].item() == pytest.approx(expected_camera, abs=1e-6)
    assert domain_ce[0] != pytest.approx(domain_ce[1])
    expected_total = TRIPLET + expected_id + expected_domain + expected_camera
    assert total.item() == pytest.approx(expected_total, abs=1e-5)
    assert set(parts) == {"id", "triplet", "domain", "camera"}


def test_weights_and_detached_parts():
    loss = DCSDLoss(domain_weight=0.5, camera_weight=2.0, label_smoothing=0.0)
    total, parts = loss(make_output(requires_grad=True), PIDS, DOMAINS, CAMIDS)
    assert all(not value.requires_grad for value in parts.values())
    expected = parts["triplet"] + parts["id"] + 0.5 * parts["domain"] + 2.0 * parts["camera"]
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    assert parts["id"].item() == pytest.approx(cross_entropy(ID_LOGITS, PIDS.tolist()), abs=1e-6)


def test_no_dcsd_layers_gives_zero_factor_terms():
    total, parts = DCSDLoss()(make_output(domain=(), camera=()), PIDS, DOMAINS, CAMIDS)
    assert parts["domain"].item() == 0.0 and parts["camera"].item() == 0.0
    assert parts["domain"].dtype == torch.float32
    assert total.item() == pytest.approx(parts["id"].item() + TRIPLET, abs=1e-6)


def test_gradients_reach_every_input():
    output = make_output(requires_grad=True)
    total, _ = DCSDLoss()(output, PIDS, DOMAINS, CAMIDS)
    total.backward()
    tensors = [output.features, output.logits, *output.domain_logits, *output.camera_logits]
    for tensor in tensors:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_weighted_triplet_option():
    output = make_output()
    _, parts = DCSDLoss(triplet="weighted")(output, PIDS, DOMAINS, CAMIDS)
    expected = WeightedRegularizationTriplet()(output.features, PIDS)
    assert parts["triplet"].item() == pytest.approx(expected.item())
    assert parts["triplet"].item() != pytest.approx(TRIPLET)


def test_autocast_inputs_computed_in_float32():
    output = make_output()
    half = ReIDOutput(*(v.bfloat16() for v in output[:2]), output[2], output[3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = DCSDLoss()(half, PIDS, DOMAINS, CAMIDS)
    assert total.dtype == torch.float32


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"pids": torch.tensor([0, 0, 1])}, ValueError, r"pids must have shape \(4,\)"),
        ({"pids": torch.tensor([0, 0, 1, 2])}, ValueError, r"pids must lie in \[0, 2\)"),
        ({"domains": torch.tensor([0, 0, 1, 5])}, ValueError, "domains"),
        ({"camids": torch.tensor([0, 1, 2])}, ValueError, "camids"),
        ({"camids": torch.tensor([0.0, 1.0, 2.0, 2.0])}, TypeError, "camids"),
    ],
)
def test_validates_labels(change, error, match):
    labels = {"pids": PIDS, "domains": DOMAINS, "camids": CAMIDS, **change}
    with pytest.raises(error, match=match):
        DCSDLoss()(make_output(), **labels)


def test_validates_output():
    bad_layer = (DOMAIN_LOGITS[0][:3],)
    with pytest.raises(ValueError, match=r"domain_logits\[0\].*4 rows"):
        DCSDLoss()(make_output(domain=bad_layer), PIDS, DOMAINS, CAMIDS)
    with pytest.raises(TypeError, match="ReIDOutput"):
        DCSDLoss()((torch.zeros(4, 1), torch.zeros(4, 2)), PIDS, DOMAINS, CAMIDS)


def test_rejects_unknown_options():
    with pytest.raises(ValueError, match="triplet"):
        DCSDLoss(triplet="hard")
    with pytest.raises(ValueError, match="camera_weight"):
        DCSDLoss(camera_weight=-1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_label_range_check_does_not_sync_on_cuda():
    from dcsd.losses._checks import check_label_range

    labels = torch.tensor([0, 3, 1], device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        check_label_range("pids", labels, 4)  # a .tolist() here would raise under this mode
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
