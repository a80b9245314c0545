r"""Evaluate a trained model only: rank each dataset's queries against its gallery.

MODEL is a model folder (e.g. runs/joint/model) or a Hub repository id. Without --data-root the
test splits of dcsd's synthetic domains are used; the image size is the one the model's card
names unless --image-size says otherwise.

    dcsd eval runs/joint/model                               # every synthetic domain
    dcsd eval runs/joint/model --datasets synth2 --rerank
    dcsd eval you/resnet50_dcsd-joint5 --data-root /data --datasets market1501,msmt17
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

import dcsd
from dcsd.engine import build_eval_splits, evaluate_model
from dcsd.evaluate import format_report
from dcsd.recipe import RecipeError, build_recipe

from .options import add_section_options, given_options
from .train import load_domains

DATA_OPTIONS = ("data_root", "datasets", "register", "synthetic_scale", "image_size", "workers")


def add_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcsd eval``."""
    parser.add_argument("model", help="a model folder (config.json + weights) or a Hub id")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed the synthetic domains were drawn with"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_section_options(parser, "data", only=DATA_OPTIONS)
    add_section_options(parser, "test")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``dcsd eval``: load the model, build the test splits, print the metrics."""
    flags = given_options(args)
    flags.setdefault("train", {})["seed"] = args.seed
    try:
        config = build_recipe([("the command line", flags)])
    except RecipeError as error:
        parser.error(str(error))
    model = dcsd.load_model(args.model, num_classes=0).to(args.device)
    image_size = tuple(flags.get("data", {}).get("image_size", model.pretrained_cfg.input_size[1:]))
    datasets, _ = load_domains(config)
    splits = build_eval_splits(datasets, image_size=image_size, num_workers=config.data.workers)
    print(f"{args.model} at {image_size[0]}x{image_size[1]} on {', '.join(splits)}")
    results = evaluate_model(model, splits, device=args.device, **dataclasses.asdict(config.test))
    print(format_report(results))
