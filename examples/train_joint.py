r"""Train a ReID model jointly on several datasets (or one model per dataset) and evaluate it.

With no arguments: ResNet50-DCSD on dcsd's built-in synthetic multi-domain data, on the CPU, in a
few minutes. With ``--data-root`` and ``--datasets``: the paper's recipe on real data.

    python examples/train_joint.py
    python examples/train_joint.py --data-root /data   # the paper's five, in DATASET_NAMES order
    python examples/train_joint.py --datasets synth0,synth1 --test-datasets synth2  # unseen domain
    python examples/train_joint.py --data-root /data --datasets market1501,dukemtmc,cuhk03 \
        --combineall --test-datasets msmt17                    # domain generalisation
    torchrun --nproc_per_node 4 examples/train_joint.py --data-root /data \
        --datasets market1501,dukemtmc
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import dcsd
from dcsd.data import (
    DATASET_NAMES,
    MultiDomainDataset,
    build_dataset,
    list_datasets,
    make_synthetic_domains,
)
from dcsd.engine import (
    RunLock,
    TrainConfig,
    Trainer,
    build_eval_splits,
    build_train_loader,
    destroy_distributed,
    evaluate_model,
    init_distributed,
    seed_everything,
)
from dcsd.evaluate import format_report
from dcsd.losses import DCSDLoss
from dcsd.models import (
    load_ddf_backbone,
    load_imagenet_backbone,
    load_weights,
    read_ddf_weights,
)

# Real data follows the paper's recipe; the synthetic default is sized for a CPU demo.
REAL_DEFAULTS = {"epochs": 120, "size": (256, 128), "batch": (16, 4), "warmup": 10.0}
SYNTHETIC_DEFAULTS = {"epochs": 10, "size": (64, 32), "batch": (8, 4), "warmup": 1.0}
# ResNet50 reduces an image 16-fold: below this the feature map is a pixel or less.
MIN_IMAGE_SIZE = (32, 16)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", type=Path, help="folder holding the datasets' folders")
    data.add_argument(
        "--datasets",
        help="comma-separated training dataset names, in domain order (default: the paper's five "
        f"with --data-root, {','.join(DATASET_NAMES)}, the zoo's order, which fixes the global "
        "camera IDs; else every synthetic domain: synth0,synth1,synth2); with --data-root the "
        "five benchmarks or any added with dcsd.data.register_dataset",
    )
    data.add_argument(
        "--test-datasets",
        help="comma-separated datasets to evaluate on, e.g. unseen ones (default: --datasets)",
    )
    data.add_argument(
        "--combineall",
        action="store_true",
        help="train on each training dataset's train + query + gallery (torchreid's combineall)",
    )
    data.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable): a module of yours that calls "
        "dcsd.data.register_dataset, so --datasets can name your dataset",
    )
    data.add_argument("--synthetic-scale", type=float, default=1.0, help="synthetic data size")
    data.add_argument("--balance-domains", action="store_true", help="equal domains per batch")
    data.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    data.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", default="resnet50_dcsd", choices=["resnet50_dcsd", "resnet50_reid"]
    )
    model.add_argument("--head", default="bot", choices=["bot", "agw"])
    model.add_argument(
        "--factors",
        default="sample,domain,camera",
        help="DCSD filter factors (paper Table V ablations), e.g. sample,domain",
    )
    model.add_argument("--no-stop-gradient", action="store_true", help="paper Table VI ablation")
    model.add_argument(
        "--pretrained",
        default=None,
        help="the start: 'imagenet' (torchvision's ResNet50 backbone; default with real data), "
        "'none', weights of the zoo (dcsd.list_pretrained(), e.g. resnet50_dcsd.joint5) or a "
        "local model folder",
    )
    model.add_argument(
        "--init-ddf",
        type=Path,
        metavar="PATH",
        help="start ResNet50-DCSD from DDF's ImageNet weights: ddf_mul_resnet50.pth.tar or a "
        "folder written by examples/convert_ddf.py (sets filter_norm ddf)",
    )
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch", type=int, nargs=2, metavar=("P", "K"), help="ids x images")
    train.add_argument("--lr", type=float, default=3.5e-4)
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--warmup-epochs", type=float)
    train.add_argument(
        "--generator-lr-factor", type=float, default=1.0, help="lr x this for the DCSD generators"
    )
    train.add_argument(
        "--generator-warmup-epochs",
        type=float,
        help="warmup of the fresh DCSD generators (default: --warmup-epochs)",
    )
    train.add_argument("--milestones", type=int, nargs="*", help="lr /10 at these epochs")
    train.add_argument(
        "--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="auto: bf16 on CUDA"
    )
    train.add_argument("--channels-last", action="store_true")
    train.add_argument("--triplet", default="batch_hard", choices=["batch_hard", "weighted"])
    train.add_argument("--per-domain", action="store_true", help="one model per dataset")
    train.add_argument("--eval-period", type=int, default=0, help="0: evaluate at the end")
    train.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking at test")
    train.add_argument("--aqe", action="store_true", help="average query expansion at test")
    train.add_argument("--roc", action="store_true", help="also report TPR at FPR 1e-4..1e-2")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    train.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    train.add_argument(
        "--overwrite", action="store_true", help="start over in a used --out (deletes its run)"
    )
    train.add_argument(
        "--nonfinite",
        default="raise",
        choices=["raise", "skip"],
        help="a NaN/inf loss or gradient stops the run, or its step is skipped",
    )
    train.add_argument("--out", type=Path, default=Path("runs/joint"))
    train.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    # Every value is checked before any data is built or any seed drawn.
    if args.batch is not None and min(args.batch) < 2:
        parser.error(
            f"--batch P K must have P >= 2 identities of K >= 2 images each (a batch-hard "
            f"triplet needs a positive and a negative), got {args.batch[0]} {args.batch[1]}"
        )
    if args.image_size is not None and (
        args.image_size[0] < MIN_IMAGE_SIZE[0] or args.image_size[1] < MIN_IMAGE_SIZE[1]
    ):
        parser.error(
            f"--image-size H W must be at least {MIN_IMAGE_SIZE[0]} {MIN_IMAGE_SIZE[1]}, got "
            f"{args.image_size[0]} {args.image_size[1]}"
        )
    try:
        train_config(args)
    except ValueError as error:
        parser.error(f"{error} (see --help)")
    return args


def load_domains(args: argparse.Namespace) -> tuple[list, list]:
    """The training datasets and the test datasets."""
    if args.data_root is None:
        synthetic = {
            d.name: d for d in make_synthetic_domains(scale=args.synthetic_scale, seed=args.seed)
        }

        def build(name):
            if name not in synthetic:
                raise SystemExit(f"without --data-root, datasets are {sorted(synthetic)}: {name}")
            return synthetic[name]

        default = ",".join(synthetic)
    else:
        for module in args.register:
            importlib.import_module(module)

        def build(name):
            return build_dataset(name, args.data_root)

        default = ",".join(DATASET_NAMES)
    names = [name.strip() for name in (args.datasets or default).split(",") if name.strip()]
    test_names = [n.strip() for n in (args.test_datasets or "").split(",") if n.strip()]
    if args.data_root is not None:
        unknown = [name for name in names + test_names if name not in list_datasets()]
        if unknown:
            raise SystemExit(
                f"--datasets: unknown {unknown}; known: {list_datasets()} (register your own "
                "with dcsd.data.register_dataset in a module passed as --register MODULE)"
            )
    leaked = sorted(set(names) & set(test_names))
    if args.combineall and leaked:
        raise SystemExit(
            f"--combineall trains on the query and gallery of {leaked}: they cannot be "
            "--test-datasets too"
        )
    if args.combineall and not test_names:
        raise SystemExit("--combineall needs --test-datasets other than the training ones")
    if args.per_domain and test_names:
        raise SystemExit("--per-domain and --test-datasets do not go together")
    train = [build(name) for name in names]
    if args.combineall:
        train = [dataset.combine_all() for dataset in train]
    return train, [build(name) for name in test_names]


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the flags, with the real-data or synthetic defaults."""
    defaults = SYNTHETIC_DEFAULTS if args.data_root is None else REAL_DEFAULTS
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    milestones = args.milestones
    if milestones is None:
        milestones = [40, 90] if args.data_root is not None else [max(1, epochs * 7 // 10)]
    return TrainConfig(
        epochs=epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs if args.warmup_epochs is not None else defaults["warmup"],
        generator_lr_factor=args.generator_lr_factor,
        generator_warmup_epochs=args.generator_warmup_epochs,
        milestones=tuple(milestones),
        amp=args.amp,
        channels_last=args.channels_last,
        seed=args.seed,
        eval_period=args.eval_period,
        progress=not args.no_progress,
        nonfinite=args.nonfinite,
    )


def train_and_evaluate(args, datasets, out_dir: Path, context, test_datasets=()) -> dict:
    defaults = SYNTHETIC_DEFAULTS if args.data_root is None else REAL_DEFAULTS
    image_size = tuple(args.image_size or defaults["size"])
    num_identities, num_instances = args.batch or defaults["batch"]
    pretrained = args.pretrained or ("imagenet" if args.data_root is not None else "none")

    data = MultiDomainDataset(datasets)
    if context.is_main:
        print(data.summary())
    # Zero-initialised residual branches only matter from scratch (pretrained weights replace
    # them), where they make the synthetic demo learn in minutes instead of not at all.
    model_kwargs = {**data.model_kwargs(), "head": args.head, "zero_init_residual": True}
    if args.model == "resnet50_dcsd":
        model_kwargs |= {
            "factors": tuple(args.factors.split(",")),
            "stop_gradient": not args.no_stop_gradient,
        }
    if args.init_ddf is not None:
        if args.model != "resnet50_dcsd" or args.pretrained is not None:
            raise SystemExit("--init-ddf starts resnet50_dcsd: drop --pretrained / --model")
        pretrained = "none"  # every backbone tensor comes from DDF instead
        model_kwargs["filter_norm"] = "ddf"
    seed_everything(args.seed)
    if pretrained in dcsd.list_pretrained():
        model = dcsd.create_model(pretrained, pretrained=True, **model_kwargs)
    else:
        model = dcsd.create_model(args.model, **model_kwargs)
    if pretrained == "imagenet":
        load_imagenet_backbone(model)
    elif pretrained not in ("none", *dcsd.list_pretrained()):
        load_weights(model, pretrained)
    if args.init_ddf is not None:
        report = load_ddf_backbone(model, read_ddf_weights(args.init_ddf))
        if context.is_main:
            print(
                f"DDF start {args.init_ddf}: {len(report.loaded)} tensors loaded, "
                f"{len(report.fresh)} fresh"
            )
    config = train_config(args)
    train_loader = build_train_loader(
        data,
        image_size=image_size,
        num_identities=num_identities,
        num_instances=num_instances,
        balance_domains=args.balance_domains,
        seed=args.seed,
        num_workers=args.workers,
        context=context,
    )
    splits = build_eval_splits(
        test_datasets or data, image_size=image_size, num_workers=args.workers
    )
    test_options = {"rerank": args.rerank, "aqe": args.aqe, "roc": args.roc}
    trainer = Trainer(
        model,
        DCSDLoss(triplet=args.triplet),
        train_loader,
        config,
        out_dir,
        context=context,
        evaluate=lambda m: evaluate_model(m, splits, device=context.device, **test_options),
        overwrite=args.overwrite,
        data=data,
    )
    if args.resume and trainer.resume() and context.is_main:
        print(f"resumed from epoch {trainer.start_epoch}")
    records = trainer.fit()
    if not context.is_main:
        return {}
    for record in records:
        parts = ", ".join(
            f"{k} {record[k]:.3f}" for k in ("loss", "id", "triplet", "domain", "camera")
        )
        print(f"epoch {record['epoch']}: {parts}, {record['images_per_s']:.1f} img/s")
    results = records[-1].get("eval", {}) if records else {}
    model_dir = trainer.model_dir
    # The trainer writes the weights' card (datasets, cameras, image size, recipe, metrics).
    if records:  # a finished run resumed trains nothing: keep its exported model and card
        trainer.export_model()
    print(f"saved {model_dir} (config.json + model.safetensors)")
    return results


def main() -> None:
    args = parse_args()
    context = init_distributed(args.device)
    if context.is_main and args.out.is_dir() and not args.per_domain:
        # Fail fast: a run already in --out is named now, not after the data and the image
        # check are built. The Trainer takes the lock itself for the whole run.
        probe = RunLock(args.out)
        probe.acquire()
        probe.release()
    datasets, test_datasets = load_domains(args)
    if args.per_domain:
        results = {}
        for dataset in datasets:
            results |= train_and_evaluate(args, [dataset], args.out / dataset.name, context)
    else:
        results = train_and_evaluate(args, datasets, args.out, context, test_datasets)
    if context.is_main and results:
        print(format_report(results))
    destroy_distributed()


if __name__ == "__main__":
    main()
