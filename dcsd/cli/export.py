r"""Export a trained model's embedding (eval mode, after BNNeck) to ONNX.

MODEL is a model folder (e.g. runs/joint/model) or a Hub repository id; the example input has
the size its card names unless --image-size says otherwise (the batch dimension is dynamic).

    dcsd export runs/joint/model model.onnx
    dcsd export runs/joint/model model.onnx --image-size 256 128 --opset 18
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import dcsd


def add_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcsd export``; --opset's default is dcsd.export_onnx's own."""
    defaults = inspect.signature(dcsd.export_onnx).parameters
    parser.add_argument("model", help="a model folder (config.json + weights) or a Hub id")
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--opset", type=int, default=defaults["opset"].default)
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="run onnxscript's graph optimiser on the graph (minutes on a CPU for ResNet50-DCSD)",
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``dcsd export``: load the model without its classifier, write the ONNX graph."""
    if args.out.is_dir():
        parser.error(f"{args.out} is a folder: give the .onnx file's path")
    model = dcsd.load_model(args.model, num_classes=0)
    image_size = tuple(args.image_size or model.pretrained_cfg.input_size[1:])
    path = dcsd.export_onnx(
        model, args.out, image_size=image_size, opset=args.opset, optimize=args.optimize
    )
    print(f"{args.model} -> {path} (input images N x 3 x {image_size[0]} x {image_size[1]})")
