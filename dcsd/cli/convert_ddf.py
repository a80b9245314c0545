r"""Convert DDF's ImageNet-trained ddf_mul_resnet50 into a ResNet50-DCSD model folder.

    dcsd convert-ddf ddf_mul_resnet50.pth.tar runs/ddf_imagenet
    dcsd train --init-ddf runs/ddf_imagenet ...          # start training from it

Get ddf_mul_resnet50.pth.tar (79.1% ImageNet top-1) from the link in the README of DDF's
repository (github.com/theFoxofSky/ddfnet). The file is read with torch.load(weights_only=True)
(only timm's argparse.Namespace allowed): nothing else in it is unpickled. The folder holds
config.json (the card names the file it came from) and model.safetensors: the stem, 1x1
convolutions, BatchNorms, downsample branches and the DCSD layers' spatial and channel branches
come from DDF; the domain and camera MLPs start with their last layer at zero (so the model
computes DDF's function), their classifiers and the head fresh.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import dcsd
from dcsd.models import load_ddf_backbone, read_ddf_checkpoint, save_model
from dcsd.recipe import RecipeError, build_recipe

from .options import add_section_options, given_options


def add_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcsd convert-ddf``."""
    parser.add_argument("checkpoint", type=Path, help="DDF's ddf_mul_resnet50.pth.tar")
    parser.add_argument("out", type=Path, help="model folder to write")
    parser.add_argument("--num-domains", type=int, help="default: the model's (the paper's 5)")
    parser.add_argument("--num-cameras", type=int, help="default: the model's (the paper's 32)")
    parser.add_argument(
        "--spatial-information",
        action="store_true",
        help="the spatial branch reads X + D + Cam (starts equal to DDF too)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    add_section_options(parser, "model", only=("head", "factors"))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``dcsd convert-ddf``: read DDF's checkpoint, write the model folder."""
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise SystemExit(f"{args.out} exists and is not empty: pass --overwrite to replace it")
    try:
        recipe = build_recipe([("the command line", given_options(args))]).model
    except RecipeError as error:
        parser.error(str(error))
    state = read_ddf_checkpoint(args.checkpoint)
    counts = {"num_domains": args.num_domains, "num_cameras": args.num_cameras}
    model = dcsd.resnet50_dcsd(
        num_classes=0,
        **{name: value for name, value in counts.items() if value is not None},
        head=recipe.head,
        factors=recipe.factors,
        spatial_information=args.spatial_information,
        filter_norm="ddf",
    )
    report = load_ddf_backbone(model, state)
    # Still untrained for ReID: the card names the start and its ImageNet input size only.
    model.pretrained_cfg = dataclasses.replace(
        model.pretrained_cfg,
        input_size=(3, 224, 224),
        source=f"converted from the DDF ddf_mul_resnet50 checkpoint {args.checkpoint.name}",
    )
    save_model(model, args.out)
    print(
        f"{args.checkpoint} -> {args.out}: {len(report.loaded)} tensors from DDF, "
        f"{len(report.fresh)} fresh, {len(report.ignored)} unused ({', '.join(report.ignored)})"
    )
