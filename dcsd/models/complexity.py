"""Parameters and multiply-accumulates of the zoo's models, counted as the paper's Table IV.

Run ``python -m dcsd.models.complexity`` for the table. The paper counts at 224x224 with an
ImageNet layout (last stride 2) and a 1000-class classifier; MACs come from
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products and the DCSD op's
registered formula), whose FLOP total counts a multiply-add as 2.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import create_model

# Paper Table IV: (parameters, MACs) at 224x224 with a 1000-class classifier.
PAPER_TABLE_IV = {"resnet50_reid": (25.6e6, 4.1e9), "resnet50_dcsd": (18.2e6, 2.3e9)}


@dataclass(frozen=True)
class Complexity:
    """Parameters and multiply-accumulates of one forward pass of one image."""

    params: int
    macs: int


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of an eval-mode forward of one (C, H, W) image.

    The DCSD layers must run through the registered op (``backend="auto"``): the
    ``"reference"`` backend is made of elementwise ops the counter does not see.
    """
    parameter = next(model.parameters())
    images = torch.zeros(1, *input_size, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images)
    model.train(was_training)
    return counter.get_total_flops() // 2


def imagenet_complexity(name: str, input_size: tuple[int, int, int] = (3, 224, 224)) -> Complexity:
    """Complexity of the zoo model ``name`` as the paper counts it (ImageNet layout: last stride
    2, 1000-class classifier)."""
    model = create_model(name, num_classes=1000, last_stride=2)
    return Complexity(count_parameters(model), count_macs(model, input_size))


def main(argv: list[str] | None = None) -> None:
    """Print parameters and MACs of the zoo's models next to the paper's Table IV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    args = parser.parse_args(argv)
    input_size = (3, *args.size)
    print(f"input 1x3x{args.size[0]}x{args.size[1]}, 1000-class classifier, last stride 2")
    print(f"{'model':<16}{'params':>10}{'paper':>8}{'diff':>8}{'MACs':>10}{'paper':>8}{'diff':>8}")
    for name, (paper_params, paper_macs) in PAPER_TABLE_IV.items():
        result = imagenet_complexity(name, input_size)
        print(
            f"{name:<16}{result.params / 1e6:>9.2f}M{paper_params / 1e6:>7.1f}M"
            f"{(result.params / paper_params - 1) * 100:>+7.1f}%"
            f"{result.macs / 1e9:>9.2f}G{paper_macs / 1e9:>7.1f}G"
            f"{(result.macs / paper_macs - 1) * 100:>+7.1f}%"
        )


if __name__ == "__main__":
    main()
