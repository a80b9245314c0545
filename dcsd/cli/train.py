r"""Train a ReID model jointly on several datasets (or one model per dataset) and evaluate it.

With no arguments: ResNet50-DCSD on dcsd's built-in synthetic multi-domain data, on the CPU, in
a few minutes (the recipe configs/synthetic.yaml). With --data-root: the paper's recipe
(configs/bot_dcsd_joint.yaml) unless --config names another. Flags and --set override the
recipe; the resolved recipe is written to OUT/config.yaml, which --resume reads back.

    dcsd train
    dcsd train --config configs/bot_dcsd_joint.yaml --data-root /data
    dcsd train --config agw_dcsd_joint --data-root /data --set train.lr=7e-4
    dcsd train --datasets synth0,synth1 --test-datasets synth2          # an unseen domain
    dcsd train --out runs/joint --resume                                # continue a run
    torchrun --nproc_per_node 4 -m dcsd.cli train --config bot_dcsd_joint --data-root /data
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

from torch import nn

import dcsd
from dcsd.cli.starts import load_start
from dcsd.data import (
    DATASET_NAMES,
    MultiDomainDataset,
    ReIDDataset,
    build_dataset,
    list_datasets,
    make_synthetic_domains,
)
from dcsd.engine import (
    Callback,
    DistributedContext,
    RunLock,
    Trainer,
    build_eval_splits,
    build_train_loader,
    destroy_distributed,
    evaluate_model,
    init_distributed,
    seed_everything,
)
from dcsd.engine.tensorboard import TENSORBOARD_NOTICE, TensorBoardLogger, tensorboard_available
from dcsd.evaluate import format_report
from dcsd.losses import DCSDLoss
from dcsd.models import init_from, load_ddf_backbone, read_ddf_weights
from dcsd.recipe import (
    RECIPE_FILE,
    RecipeError,
    RunConfig,
    build_recipe,
    find_recipe,
    parse_override,
    read_recipe_file,
    save_recipe,
)

from .options import add_section_options, given_options

SYNTHETIC_RECIPE = "synthetic"
REAL_DATA_RECIPE = "bot_dcsd_joint"
TENSORBOARD_FOLDER = "tb"


def add_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcsd train``: the run's own, then one per recipe key."""
    run = parser.add_argument_group("run")
    run.add_argument(
        "--config",
        metavar="RECIPE",
        help=f"a recipe file, or a bundled recipe's name (default: {SYNTHETIC_RECIPE}, or "
        f"{REAL_DATA_RECIPE} with --data-root)",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one recipe key (repeatable; the value is read as YAML)",
    )
    run.add_argument("--out", type=Path, default=Path("runs/joint"), help="the run's folder")
    run.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    run.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run in --out from its checkpoint, with its {RECIPE_FILE}",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="start over in a used --out (deletes its run)"
    )
    for section in ("data", "model", "loss", "train", "test"):
        add_section_options(parser, section)


def resolve_recipe(args: argparse.Namespace) -> tuple[RunConfig, str]:
    """The run's recipe (file < --set < flags) and the file it started from.

    Raises:
        RecipeError: naming the file or flag and the key at fault.
    """
    flags = given_options(args)
    overrides: dict[str, Any] = {}
    for text in args.overrides:
        for section, values in parse_override(text).items():
            overrides.setdefault(section, {}).update(values)
    saved = args.out / RECIPE_FILE
    if args.resume and saved.is_file():
        if args.config is not None:
            raise RecipeError(
                f"--resume reads the run's recipe {saved}: drop --config (flags and --set still "
                "override it)"
            )
        path = saved
    else:
        real = {**overrides.get("data", {}), **flags.get("data", {})}.get("data_root")
        path = find_recipe(args.config or (REAL_DATA_RECIPE if real else SYNTHETIC_RECIPE))
    layers = [(str(path), read_recipe_file(path)), ("--set", overrides)]
    return build_recipe(layers + [("the command line", flags)]), str(path)


def load_domains(config: RunConfig) -> tuple[list[ReIDDataset], list[ReIDDataset]]:
    """The training datasets (in domain order) and the test datasets."""
    data = config.data
    if data.data_root is None:
        synthetic = {
            d.name: d
            for d in make_synthetic_domains(scale=data.synthetic_scale, seed=config.train.seed)
        }

        def build(name: str) -> ReIDDataset:
            if name not in synthetic:
                raise SystemExit(f"without --data-root, datasets are {sorted(synthetic)}: {name}")
            return synthetic[name]

        default = tuple(synthetic)
    else:
        for module in data.register:
            importlib.import_module(module)

        def build(name: str) -> ReIDDataset:
            return build_dataset(name, data.data_root)

        default = DATASET_NAMES
    names = list(data.datasets or default)
    test_names = list(data.test_datasets)
    if data.data_root is not None:
        unknown = [name for name in names + test_names if name not in list_datasets()]
        if unknown:
            raise SystemExit(
                f"--datasets: unknown {unknown}; known: {list_datasets()} (register your own "
                "with dcsd.data.register_dataset in a module passed as --register MODULE)"
            )
    leaked = sorted(set(names) & set(test_names))
    if data.combineall and leaked:
        raise SystemExit(
            f"--combineall trains on the query and gallery of {leaked}: they cannot be "
            "--test-datasets too"
        )
    if data.combineall and not test_names:
        raise SystemExit("--combineall needs --test-datasets other than the training ones")
    if data.per_domain and test_names:
        raise SystemExit("--per-domain and --test-datasets do not go together")
    train = [build(name) for name in names]
    if data.combineall:
        train = [dataset.combine_all() for dataset in train]
    return train, [build(name) for name in test_names]


class RecordRecipe(Callback):
    """Writes the run's fully resolved recipe to ``path`` when training starts (after the
    trainer has claimed its folder, so a refused run leaves the folder's recipe alone)."""

    def __init__(self, config: RunConfig, path: Path) -> None:
        self.config = config
        self.path = path

    def on_fit_begin(self, trainer: Trainer) -> None:
        if trainer.context.is_main:
            save_recipe(self.config, self.path)


def build_model(
    config: RunConfig, data: MultiDomainDataset, context: DistributedContext
) -> nn.Module:
    """The recipe's model, sized for ``data``, with its start (ImageNet, DDF, a trained model
    to fine-tune, or none)."""
    recipe = config.model
    model_kwargs = {
        **data.model_kwargs(),
        "head": recipe.head,
        "zero_init_residual": recipe.zero_init_residual,
    }
    dynamic = recipe.is_dynamic()
    if dynamic:
        model_kwargs |= {
            "factors": recipe.factors,
            "stop_gradient": recipe.stop_gradient,
            "detach_information_input": recipe.detach_information_input,
        }
    if recipe.init_ddf is not None:
        if not dynamic:
            raise SystemExit(f"--init-ddf starts a DCSD model, not {recipe.architecture}")
        model_kwargs["filter_norm"] = "ddf"
    seed_everything(config.train.seed)
    model = dcsd.create_model(recipe.architecture, **model_kwargs)
    load_start(model, recipe.pretrained)
    if recipe.init_ddf is not None:
        report = load_ddf_backbone(model, read_ddf_weights(recipe.init_ddf))
        if context.is_main:
            print(
                f"DDF start {recipe.init_ddf}: {len(report.loaded)} tensors loaded, "
                f"{len(report.fresh)} fresh"
            )
    if recipe.init is not None:
        dropped = init_from(model, recipe.init)
        if context.is_main:
            fresh = ", ".join(f"{head} {old} -> {new}" for head, (old, new) in dropped.items())
            print(f"fine-tuning {recipe.init}: heads started fresh: {fresh or 'none'}")
    return model


def train_and_evaluate(
    config: RunConfig,
    datasets: list[ReIDDataset],
    out_dir: Path,
    context: DistributedContext,
    args: argparse.Namespace,
    test_datasets: list[ReIDDataset] | tuple = (),
) -> dict[str, Any]:
    """Train one model on ``datasets`` into ``out_dir``, test it; returns its test metrics."""
    data = MultiDomainDataset(datasets)
    if context.is_main:
        print(data.summary())
    image_size = config.data.image_size
    model = build_model(config, data, context)
    num_identities, num_instances = config.data.batch
    train_loader = build_train_loader(
        data,
        image_size=image_size,
        num_identities=num_identities,
        num_instances=num_instances,
        balance_domains=config.data.balance_domains,
        seed=config.train.seed,
        num_workers=config.data.workers,
        context=context,
    )
    splits = build_eval_splits(
        test_datasets or data, image_size=image_size, num_workers=config.data.workers
    )
    test_options = dataclasses.asdict(config.test)
    callbacks: list[Callback] = [RecordRecipe(config, args.out / RECIPE_FILE)]
    if tensorboard_available():
        callbacks.append(TensorBoardLogger(out_dir / TENSORBOARD_FOLDER))
    elif context.is_main:
        print(TENSORBOARD_NOTICE, file=sys.stderr)
    trainer = Trainer(
        model,
        DCSDLoss(**dataclasses.asdict(config.loss)),
        train_loader,
        config.train,
        out_dir,
        context=context,
        evaluate=lambda m: evaluate_model(m, splits, device=context.device, **test_options),
        overwrite=args.overwrite,
        data=data,
        callbacks=callbacks,
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
    # The trainer writes the weights' card (datasets, cameras, image size, recipe, metrics).
    if records:  # a finished run resumed trains nothing: keep its exported model and card
        trainer.export_model()
    print(f"saved {trainer.model_dir} (config.json + model.safetensors)")
    return results


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``dcsd train``: check the recipe, then train and test."""
    try:
        config, source = resolve_recipe(args)
    except RecipeError as error:
        parser.error(str(error))
    context = init_distributed(args.device)
    if context.is_main and args.out.is_dir() and not config.data.per_domain:
        # Fail fast: a run already in --out is named now, not after the data and the image
        # check are built. The Trainer takes the lock itself for the whole run.
        probe = RunLock(args.out)
        probe.acquire()
        probe.release()
    datasets, test_datasets = load_domains(config)
    # The resolved recipe names its datasets in domain order, not "the default".
    config.data = dataclasses.replace(config.data, datasets=tuple(d.name for d in datasets))
    if context.is_main:
        print(f"recipe {source}, written with the run to {args.out / RECIPE_FILE}")
    if config.data.per_domain:
        results: dict[str, Any] = {}
        for dataset in datasets:
            results |= train_and_evaluate(config, [dataset], args.out / dataset.name, context, args)
    else:
        results = train_and_evaluate(config, datasets, args.out, context, args, test_datasets)
    if context.is_main and results:
        print(format_report(results))
    destroy_distributed()
