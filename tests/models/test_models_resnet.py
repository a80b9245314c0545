"""ResNet50-DCSD and the static baseline: outputs, gradients, switches, backends, compile, zoo."""

import pytest
import torch

import dcsd
from dcsd.models import ReIDOutput, ReIDResNet
from dcsd.models.complexity import PAPER_TABLE_IV, imagenet_complexity
from dcsd.modules import DCSDConv, NonLocalBlock

NUM_CLASSES, DOMAINS, CAMERAS = 8, 3, 6


def images(batch: int = 2, height: int = 32, width: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dcsd_model() -> ReIDResNet:
    torch.manual_seed(0)
    return dcsd.resnet50_dcsd(num_classes=NUM_CLASSES, num_domains=DOMAINS, num_cameras=CAMERAS)


@pytest.fixture(scope="module")
def training_output(dcsd_model) -> ReIDOutput:
    dcsd_model.train()
    dcsd_model.zero_grad(set_to_none=True)
    output = dcsd_model(images())
    loss = output.logits.logsumexp(1).mean() + output.features.square().mean()
    loss = loss + sum(logits.logsumexp(1).mean() for logits in output.domain_logits)
    loss = loss + sum(logits.logsumexp(1).mean() for logits in output.camera_logits)
    loss.backward()
    return output


def test_dcsd_model_has_16_dcsd_layers(dcsd_model):
    layers = [m for m in dcsd_model.modules() if isinstance(m, DCSDConv)]
    assert len(layers) == 16
    assert not any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in dcsd_model.modules()
    )
    assert [layer.stride for layer in layers if layer.stride != 1] == [2, 2]  # last stride 1


def test_training_output(dcsd_model, training_output):
    assert isinstance(training_output, ReIDOutput)
    assert training_output.features.shape == (2, 2048)
    assert training_output.logits.shape == (2, NUM_CLASSES)
    assert len(training_output.domain_logits) == 16
    assert len(training_output.camera_logits) == 16
    assert all(t.shape == (2, DOMAINS) for t in training_output.domain_logits)
    assert all(t.shape == (2, CAMERAS) for t in training_output.camera_logits)


def test_every_trainable_parameter_gets_a_gradient(dcsd_model, training_output):
    for name, parameter in dcsd_model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, name
            assert parameter.grad.abs().sum() > 0, name
    assert not dcsd_model.head.bnneck.bias.requires_grad
    assert torch.equal(dcsd_model.head.bnneck.bias, torch.zeros(2048))


def test_eval_embedding_and_feature_map(dcsd_model):
    dcsd_model.eval()
    with torch.no_grad():
        embedding = dcsd_model(images())
        feature_map = dcsd_model.forward_features(images())
        pooled, bn_embedding = dcsd_model.head(feature_map)
    dcsd_model.train()
    assert embedding.shape == (2, 2048)
    assert feature_map.shape == (2, 2048, 2, 1)  # 32x16 / 16 at last stride 1
    torch.testing.assert_close(embedding, bn_embedding, rtol=0, atol=0)


@pytest.mark.parametrize("head", ["bot", "agw"])
def test_static_baseline_same_api(head):
    torch.manual_seed(0)
    model = dcsd.resnet50_reid(num_classes=NUM_CLASSES, num_domains=DOMAINS, head=head)
    assert not any(isinstance(m, DCSDConv) for m in model.modules())
    output = model(images())
    assert output.features.shape == (2, 2048) and output.logits.shape == (2, NUM_CLASSES)
    assert output.domain_logits == () and output.camera_logits == ()
    non_local = [m for m in model.modules() if isinstance(m, NonLocalBlock)]
    assert len(non_local) == (5 if head == "agw" else 0)
    model.eval()
    with torch.no_grad():
        assert model(images()).shape == (2, 2048)


def test_agw_head_layout():
    model = dcsd.resnet50_dcsd(num_classes=NUM_CLASSES, head="agw")
    assert sorted(model.non_local) == ["layer2_2", "layer2_3", "layer3_3", "layer3_4", "layer3_5"]
    assert model.non_local["layer2_2"].out_bn.num_features == 512
    assert model.non_local["layer3_5"].out_bn.num_features == 1024
    assert model.head.pool.p.item() == 3.0
    output = model(images())
    assert output.logits.shape == (2, NUM_CLASSES) and len(output.domain_logits) == 16
    output.logits.sum().backward()
    assert model.head.pool.p.grad is not None


@pytest.mark.parametrize(
    ("factors", "domains", "cameras"),
    [(("sample",), 0, 0), (("sample", "domain"), 16, 0), (("sample", "camera"), 0, 16)],
)
def test_factor_switches_reach_the_output(factors, domains, cameras):
    model = dcsd.resnet50_dcsd(num_classes=NUM_CLASSES, factors=factors)
    output = model(images())
    assert (len(output.domain_logits), len(output.camera_logits)) == (domains, cameras)
    assert model.config["factors"] == list(factors)


def test_stop_gradient_switch_reaches_every_layer():
    model = dcsd.resnet50_dcsd(num_classes=NUM_CLASSES, stop_gradient=False)
    assert all(m.stop_gradient is False for m in model.modules() if isinstance(m, DCSDConv))
    output = model(images())
    # Without stop-gradient, the identity loss alone trains the domain MLPs.
    output.logits.sum().backward()
    assert model.layer3[0].conv2.domain_mlp[0].weight.grad.abs().sum() > 0


def test_domain_and_camera_losses_reach_the_backbone_only_when_attached():
    """By default the DCSD classifiers' losses train their MLPs and leave every backbone weight
    without a gradient; ``detach_information_input=False`` sends them into the backbone."""
    for detach in (True, False):
        torch.manual_seed(0)
        model = dcsd.resnet50_dcsd(num_classes=NUM_CLASSES, detach_information_input=detach)
        assert model.config["detach_information_input"] is detach
        output = model(images())
        sum(
            logits.square().sum() for logits in (*output.domain_logits, *output.camera_logits)
        ).backward()
        assert model.layer4[2].conv2.camera_mlp[0].weight.grad.abs().sum() > 0
        if detach:
            assert model.conv1.weight.grad is None and model.layer1[0].conv1.weight.grad is None
        else:
            assert model.conv1.weight.grad.abs().sum() > 0


def test_no_classifier_refuses_training_forward():
    model = dcsd.resnet50_dcsd()
    assert model.num_classes == 0 and model.head.classifier is None
    with pytest.raises(RuntimeError, match="reset_classifier"):
        model(images())
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.config["num_classes"] == 5
    weight = model.head.classifier.weight
    assert weight.shape == (5, 2048) and model.head.classifier.bias is None
    assert 0.0005 < weight.std().item() < 0.002
    assert model(images()).logits.shape == (2, 5)


def test_invalid_model_arguments():
    with pytest.raises(ValueError, match="head must be one of"):
        dcsd.resnet50_dcsd(head="mgn")
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        dcsd.resnet50_reid(last_stride=3)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        dcsd.resnet50_dcsd(num_classes=-1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'factors'"):
        dcsd.resnet50_reid(factors=("sample",))
    model = dcsd.resnet50_reid()
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\)"):
        model.eval()(torch.zeros(1, 1, 32, 16))


def test_triton_and_reference_give_the_same_model_output(dcsd_model, triton_device):
    # On the GPU if there is one, else under TRITON_INTERPRET=1 (tests/conftest.py) on CPU; tiny
    # input to keep the interpreter fast.
    x = images(batch=1).to(triton_device)
    dcsd_model.eval().to(triton_device)
    outputs = {}
    try:
        with torch.no_grad():
            for backend in ("reference", "triton"):
                assert dcsd.set_op_backend(dcsd_model, backend) == 16
                outputs[backend] = dcsd_model(x)
    finally:  # the model is shared by the module's tests
        dcsd.set_op_backend(dcsd_model, "auto")
        dcsd_model.train().cpu()
    torch.testing.assert_close(outputs["triton"], outputs["reference"], rtol=1e-4, atol=1e-5)


def test_training_under_ddp(dcsd_model, tmp_path):
    # Logits travel through the return value, so DDP sees every parameter used in each step
    # (no find_unused_parameters) and nothing is written to the modules during forward.
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        model = torch.nn.parallel.DistributedDataParallel(dcsd_model)
        for _ in range(2):  # DDP reports parameters left without gradient at the next step
            model.zero_grad(set_to_none=True)
            output = model(images())
            loss = output.logits.logsumexp(1).mean() + output.features.mean()
            loss = loss + sum(t.logsumexp(1).mean() for t in output.domain_logits)
            loss = loss + sum(t.logsumexp(1).mean() for t in output.camera_logits)
            loss.backward()
        assert dcsd_model.layer4[2].conv2.camera_classifier.weight.grad is not None
    finally:
        torch.distributed.destroy_process_group()


def test_torch_compile_in_eval_mode(dcsd_model):
    # aot_eager traces the whole model with fake tensors (the op's registered fake included)
    # without a graph break; inductor's CPU code generation takes minutes on CI's 2 cores.
    dcsd_model.eval()
    x = images()
    with torch.no_grad():
        expected = dcsd_model(x)
        compiled = torch.compile(dcsd_model, fullgraph=True, backend="aot_eager")
        actual = compiled(x)
    dcsd_model.train()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet50_reid", "resnet50_dcsd"])
def test_params_and_macs_match_paper_table_iv(name):
    result = imagenet_complexity(name)
    paper_params, paper_macs = PAPER_TABLE_IV[name]
    assert abs(result.params / paper_params - 1) < 0.03
    assert abs(result.macs / paper_macs - 1) < 0.03


def test_zoo():
    assert dcsd.list_models() == ["resnet50_dcsd", "resnet50_reid"]
    assert dcsd.list_models("*dcsd*") == ["resnet50_dcsd"]
    model = dcsd.create_model("resnet50_dcsd", num_domains=2, num_cameras=4, head="agw")
    assert model.config == {
        "architecture": "resnet50_dcsd",
        "num_classes": 0,
        "num_domains": 2,
        "num_cameras": 4,
        "last_stride": 1,
        "head": "agw",
        "factors": ["sample", "domain", "camera"],
        "stop_gradient": True,
        "detach_information_input": True,
        "filter_norm": "ddf",
        "spatial_information": False,
    }
    cfg = model.pretrained_cfg  # a fresh model claims no data and no metrics
    assert cfg.name == "untrained" and cfg.datasets == () and cfg.metrics == {}
    assert cfg.input_size == (3, 256, 128) and cfg.mean == (0.485, 0.456, 0.406)
    zoo = dcsd.get_pretrained_cfg("resnet50_dcsd")
    assert zoo.datasets == ("market1501", "cuhksysu", "dukemtmc", "cuhk03", "msmt17")
    assert zoo.num_cameras == 32 and not zoo.published
    assert zoo.paper_metrics["market1501"]["mAP"] == 89.5 and zoo.metrics == {}
    with pytest.raises(ValueError, match="unknown model 'resnet18'"):
        dcsd.create_model("resnet18")


@pytest.mark.parametrize(
    "factors",
    [("sample",), ("sample", "domain"), ("sample", "camera"), ("sample", "domain", "camera")],
)
def test_fresh_model_embeds_finitely_in_eval_mode(factors):
    """Fresh BatchNorm statistics and the default layer: N(0, 1) images, the same times 100,
    constant images and zeros all give finite embeddings (an unbounded layer overflows)."""
    torch.manual_seed(0)
    model = dcsd.resnet50_dcsd(num_classes=0, factors=factors).eval()
    x = images(height=128, width=64)
    with torch.no_grad():
        for batch in (x, 100 * x, torch.full_like(x, 0.7), torch.zeros_like(x)):
            assert torch.isfinite(model(batch)).all()


def test_unbounded_layer_overflows_in_eval_mode():
    """The risk written beside filter_norm="none": the same check fails without a bound."""
    torch.manual_seed(0)
    model = dcsd.resnet50_dcsd(num_classes=0, filter_norm="none").eval()
    with torch.no_grad():
        assert not torch.isfinite(model(images(height=128, width=64))).all()


def test_zero_init_residual_starts_blocks_as_identity():
    model = dcsd.resnet50_reid(zero_init_residual=True)
    blocks = [m for m in model.modules() if type(m).__name__ == "Bottleneck"]
    assert len(blocks) == 16
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    assert "zero_init_residual" not in model.config
    assert torch.all(dcsd.resnet50_reid().layer1[0].bn3.weight == 1)
