r"""Evaluate a trained model only: rank each dataset's queries against its gallery.

MODEL is a model folder (e.g. runs/joint/model) or a Hub repository id. The data and test
settings come from a recipe: --config, or by default the run's own OUT/config.yaml beside a
model folder OUT/model (so a run's test is repeated as it was: same datasets, synthetic scale,
seed and test options); flags override it. Without a recipe or --data-root, the synthetic
domains' test splits are used. The image size is the one the model's card names unless
--image-size says otherwise.

    dcsd eval runs/joint/model                       # the run's test datasets, as it tested them
    dcsd eval runs/joint/model --datasets synth2 --rerank
    dcsd eval you/resnet50_dcsd-joint5 --data-root /data --datasets market1501,msmt17
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import dcsd
from dcsd.engine import build_eval_splits, evaluate_model
from dcsd.evaluate import format_report
from dcsd.recipe import RECIPE_FILE, RecipeError, build_recipe, find_recipe, read_recipe_file

from .options import add_section_options, given_options
from .train import load_domains

DATA_OPTIONS = ("data_root", "datasets", "register", "synthetic_scale", "image_size", "workers")


def add_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcsd eval``."""
    parser.add_argument("model", help="a model folder (config.json + weights) or a Hub id")
    parser.add_argument(
        "--config",
        metavar="RECIPE",
        help=f"a recipe file or bundled recipe's name (default: MODEL/../{RECIPE_FILE} when "
        "MODEL is a run's model folder)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_section_options(parser, "data", only=DATA_OPTIONS)
    add_section_options(parser, "train", only=("seed",))
    add_section_options(parser, "test")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``dcsd eval``: load the model, build the test splits, print the metrics."""
    flags = given_options(args)
    layers = []
    path = Path(args.model).parent / RECIPE_FILE
    try:
        if args.config is not None:
            path = find_recipe(args.config)
        if args.config is not None or path.is_file():
            layers.append((str(path), read_recipe_file(path)))
            print(f"recipe {path}")
        config = build_recipe(layers + [("the command line", flags)])
    except RecipeError as error:
        parser.error(str(error))
    # The datasets named on the command line, else those the recipe tested on.
    data = config.data
    names = data.datasets if "datasets" in flags.get("data", {}) else data.test_datasets
    config.data = dataclasses.replace(
        data, datasets=names or data.datasets, test_datasets=(), combineall=False, per_domain=False
    )
    model = dcsd.load_model(args.model, num_classes=0).to(args.device)
    image_size = tuple(flags.get("data", {}).get("image_size", model.pretrained_cfg.input_size[1:]))
    datasets, _ = load_domains(config)
    splits = build_eval_splits(datasets, image_size=image_size, num_workers=config.data.workers)
    print(f"{args.model} at {image_size[0]}x{image_size[1]} on {', '.join(splits)}")
    results = evaluate_model(model, splits, device=args.device, **dataclasses.asdict(config.test))
    print(format_report(results))
