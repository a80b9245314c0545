"""Fine-tuning: a model trained on 3 synthetic domains, its heads resized for 1 new domain
(reset_heads, init_from), accepted by the fit check and trained on."""

import pytest
import torch

import dcsd
from dcsd.data import MultiDomainDataset, make_synthetic_domains
from dcsd.engine import TrainConfig, Trainer, build_train_loader, check_model_fits_data
from dcsd.losses import DCSDLoss
from dcsd.models import init_from

pytestmark = pytest.mark.slow  # two short trainings of ResNet50-DCSD on CPU (about 2 minutes)
SIZE = (32, 16)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return make_synthetic_domains(
        root=tmp_path_factory.mktemp("synthetic"),
        num_domains=4,
        train_ids_per_domain=4,
        test_ids_per_domain=2,
        image_size=SIZE,
    )


@pytest.fixture(scope="module")
def trained(domains, tmp_path_factory):
    """ResNet50-DCSD after two SGD steps on synth0-2 (every tensor moved from its init), saved."""
    old = MultiDomainDataset(domains[:3])
    torch.manual_seed(0)
    model = dcsd.resnet50_dcsd(**old.model_kwargs(), backend="reference")
    loader = build_train_loader(
        old, image_size=SIZE, num_identities=3, num_instances=2, num_workers=0
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = DCSDLoss()
    for _, batch in zip(range(2), loader, strict=False):
        output = model(batch["image"])
        loss, _ = criterion(output, batch["pid"], batch["domain"], batch["camid"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("trained") / "model"
    model.save_pretrained(folder)
    return old, folder


def groups_of(model):
    return {name: [p.detach().clone() for p in ps] for name, ps in model.parameter_groups().items()}


def test_reset_heads_keeps_the_body_and_fits_the_new_data(trained, domains):
    old, folder = trained
    new = MultiDomainDataset(domains[3:])
    model = dcsd.load_model(folder, backend="reference")
    with pytest.raises(ValueError, match="num_domains: the model has 3, the training data has 1"):
        check_model_fits_data(model, new)
    before = groups_of(model)
    dropped = model.reset_heads(**new.model_kwargs())
    assert dropped == {
        "identity": (old.num_classes, new.num_classes),
        "domain": (3, 1),
        "camera": (old.num_cameras, new.num_cameras),
    }
    assert model.heads() == {
        "identity": new.num_classes,
        "domain": 1,
        "camera": new.num_cameras,
    }
    check_model_fits_data(model, new)  # accepted now
    after = groups_of(model)
    for group in ("backbone", "generators", "information"):
        assert len(after[group]) == len(before[group])
        for kept, original in zip(after[group], before[group], strict=True):
            assert torch.equal(kept, original), group
    # Every classifier is new: 1 identity + 16 domain + 16 camera layers.
    assert len(after["heads"]) == len(before["heads"])
    assert model.config["num_domains"] == 1 and model.config["num_cameras"] == new.num_cameras
    assert model.reset_heads(**new.model_kwargs()) == {}  # fits: nothing dropped

    # Fine-tuned on the new domain: the trainer accepts it and the body moves.
    loader = build_train_loader(
        new, image_size=SIZE, num_identities=2, num_instances=2, num_workers=0
    )
    config = TrainConfig(epochs=1, lr=1e-3, warmup_epochs=0, milestones=(5,), progress=False)
    trainer = Trainer(model, DCSDLoss(), loader, config, folder.parent / "finetune", data=new)
    trainer.fit()
    tuned = groups_of(model)
    pairs = zip(tuned["generators"], after["generators"], strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert all(torch.isfinite(p).all() for ps in tuned.values() for p in ps)


def test_init_from_starts_a_model_built_for_the_new_data(trained, domains):
    old, folder = trained
    new = MultiDomainDataset(domains[3:])
    source = dcsd.load_model(folder)
    torch.manual_seed(1)
    model = dcsd.resnet50_dcsd(**new.model_kwargs(), backend="reference")
    dropped = init_from(model, folder)
    assert dropped == {
        "identity": (old.num_classes, new.num_classes),
        "domain": (3, 1),
        "camera": (old.num_cameras, new.num_cameras),
    }
    check_model_fits_data(model, new)
    ours, theirs = model.state_dict(), source.state_dict()
    head_keys = {k for k in ours if "classifier" in k}
    assert head_keys and all(torch.equal(ours[k], theirs[k]) for k in ours if k not in head_keys)
    assert all(ours[k].shape != theirs[k].shape for k in head_keys)


def test_bad_sizes_and_other_architectures_are_refused(trained):
    _, folder = trained
    model = dcsd.resnet50_dcsd(num_classes=3, num_domains=1, num_cameras=2)
    with pytest.raises(ValueError, match="num_domains must be"):
        model.reset_heads(num_domains=0)
    with pytest.raises(TypeError, match="num_classes"):
        model.reset_heads(num_classes=2.5)
    static = dcsd.resnet50_reid(num_classes=3)
    assert static.reset_heads(num_domains=1, num_cameras=2) == {}  # recorded only
    assert static.config["num_domains"] == 1
    with pytest.raises(ValueError, match=r"differs in more than its heads: architecture "):
        init_from(static, folder)
    other = dcsd.resnet50_dcsd(num_classes=3, num_domains=1, num_cameras=2, factors=("sample",))
    with pytest.raises(ValueError, match=r"factors \['sample', 'domain', 'camera'\]"):
        init_from(other, folder)
    with pytest.raises(TypeError, match="must be a dcsd ReIDResNet"):
        init_from(torch.nn.Linear(2, 2), folder)
    layer = other.layer1[0].conv2
    with pytest.raises(ValueError, match="has no domain classifier"):
        layer.reset_classifiers(num_domains=2)


def test_dcsd_train_init_fine_tunes_the_trained_model_on_new_data(trained, domains, capsys):
    """``dcsd train --init FOLDER`` (``model.init``): the recipe's model for the new data starts
    from the trained one, every tensor but the rebuilt heads equal to the saved ones."""
    from dcsd.cli.train import build_model
    from dcsd.engine.distributed import DistributedContext
    from dcsd.recipe import ModelConfig, RunConfig

    _, folder = trained
    new = MultiDomainDataset(domains[3:])
    config = RunConfig(model=ModelConfig(init=str(folder)))
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    model = build_model(config, new, context)
    check_model_fits_data(model, new)  # the heads now fit synth3
    printed = capsys.readouterr().out
    assert f"fine-tuning {folder}: heads started fresh:" in printed
    assert "domain 3 -> 1" in printed
    saved = dcsd.load_model(folder, backend="reference").state_dict()
    kept = model.state_dict()
    rebuilt = [name for name in kept if kept[name].shape != saved[name].shape]
    assert rebuilt and all("classifier" in name for name in rebuilt)
    for name, tensor in kept.items():
        if name not in rebuilt:
            assert torch.equal(tensor, saved[name]), name


def test_init_refuses_another_start_naming_both():
    from dcsd.recipe import ModelConfig

    with pytest.raises(ValueError, match="pretrained must be 'none'.*got pretrained 'imagenet'"):
        ModelConfig(init="runs/old/model", pretrained="imagenet")
