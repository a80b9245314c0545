r"""Extract ReID features of a folder of images or a dataset split, and optionally rank a query.

    # features of a synthetic domain's gallery with the model train_joint.py saved
    python examples/extract_features.py --model runs/joint/model --synthetic-domain synth0 \
        --split gallery --out gallery.safetensors --query-index 0 --ranked-list ranked.png
    # a folder of crops, with ImageNet-initialised ResNet50-DCSD
    python examples/extract_features.py --pretrained imagenet --images crops/ \
        --out crops.safetensors

The features file holds ``features`` (N, 2048), ``pids`` and ``camids`` (-1 when unknown) as
tensors and the image paths as JSON in its metadata.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from torch.utils.data import DataLoader

import dcsd
from dcsd.data import (
    ImageDataset,
    ReIDItem,
    build_dataset,
    build_test_transforms,
    make_synthetic_domains,
)
from dcsd.evaluate import extract_features, pairwise_distance

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="a folder of person crops (searched deeply)")
    source.add_argument("--dataset", help="a dataset name, e.g. market1501 (needs --data-root)")
    source.add_argument("--synthetic-domain", help="a synthetic domain name, e.g. synth0")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable): it calls dcsd.data.register_dataset",
    )
    parser.add_argument("--split", default="gallery", choices=["train", "query", "gallery"])
    parser.add_argument("--model", help="a folder saved by train_joint.py or a Hub repo id")
    parser.add_argument("--pretrained", help="'imagenet' with --arch, instead of --model")
    parser.add_argument("--arch", default="resnet50_dcsd", help="architecture for --pretrained")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("features.safetensors"))
    parser.add_argument(
        "--query-index",
        type=int,
        help="rank the features against query N (the dataset's query split, or the folder's Nth)",
    )
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--ranked-list", type=Path, help="write the query's ranked list as PNG")
    return parser.parse_args()


def load_items(args: argparse.Namespace) -> tuple[list[ReIDItem], list[ReIDItem]]:
    """The items to embed, and where ``--query-index`` points (a dataset's query split, or the
    folder itself)."""
    if args.images is not None:
        if not args.images.is_dir():
            raise FileNotFoundError(f"--images {args.images} is not a folder")
        paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"--images {args.images} holds no {sorted(IMAGE_SUFFIXES)}")
        items = [ReIDItem(str(p), -1, -1) for p in paths]
        return items, items
    if args.dataset is not None:
        if args.data_root is None:
            raise SystemExit("--dataset needs --data-root")
        for module in args.register:
            importlib.import_module(module)
        dataset = build_dataset(args.dataset, args.data_root)
    else:
        domains = {d.name: d for d in make_synthetic_domains()}
        if args.synthetic_domain not in domains:
            raise SystemExit(f"--synthetic-domain must be one of {sorted(domains)}")
        dataset = domains[args.synthetic_domain]
    return getattr(dataset, args.split), dataset.query


def load_model(args: argparse.Namespace) -> torch.nn.Module:
    if args.model is not None:
        return dcsd.load_model(args.model, num_classes=0)
    if args.pretrained is None:
        raise SystemExit("give --model (folder or Hub id) or --pretrained imagenet")
    return dcsd.create_model(args.arch, pretrained=args.pretrained)


def draw_ranked_list(query, ranked, path: Path, size=(128, 64)) -> None:
    """The query, then the top matches framed green (same identity) or red (another)."""
    height, width = size
    border = 4
    canvas = Image.new("RGB", ((len(ranked) + 1) * (width + 2 * border + 4), height + 2 * border))
    draw = ImageDraw.Draw(canvas)
    for slot, (item, colour) in enumerate([(query, "white"), *ranked]):
        left = slot * (width + 2 * border + 4)
        draw.rectangle([left, 0, left + width + 2 * border - 1, height + 2 * border - 1], colour)
        crop = Image.open(item.path).convert("RGB").resize((width, height))
        canvas.paste(crop, (left + border, border))
    canvas.save(path)


def embed(model, items, args, image_size):
    loader = DataLoader(
        ImageDataset(items, transform=build_test_transforms(size=image_size)),
        batch_size=args.batch_size,
    )
    return extract_features(model, loader, device=args.device, flip=args.flip)


def main() -> None:
    args = parse_args()
    items, queries = load_items(args)
    model = load_model(args).to(args.device).eval()
    image_size = tuple(args.image_size or model.pretrained_cfg.input_size[1:])
    features = embed(model, items, args, image_size)
    save_file(
        {
            "features": features.features.contiguous(),
            "pids": torch.as_tensor(features.pids),
            "camids": torch.as_tensor(features.camids),
        },
        str(args.out),
        metadata={"paths": json.dumps(features.paths)},
    )
    print(f"{len(items)} images -> {tuple(features.features.shape)} features in {args.out}")
    if args.query_index is None:
        return

    query = queries[args.query_index]
    query_feature = embed(model, [query], args, image_size).features
    distances = pairwise_distance(
        torch.nn.functional.normalize(query_feature, dim=1),
        torch.nn.functional.normalize(features.features, dim=1),
    )[0]
    # Market-1501 protocol: the query itself and same-identity images from its camera don't count.
    order = [
        i
        for i in distances.argsort(stable=True).tolist()
        if items[i].path != query.path
        and not (query.pid >= 0 and items[i].pid == query.pid and items[i].camid == query.camid)
    ]
    print(f"query {query.path} (pid {query.pid}, camera {query.camid})")
    ranked = []
    for rank, index in enumerate(order[: args.top_k], start=1):
        item = items[index]
        match = query.pid >= 0 and item.pid == query.pid
        ranked.append((item, "lime" if match else "red"))
        print(
            f"{rank:3d}. {'match' if match else '     '} d={distances[index]:.3f} "
            f"{item.path} (pid {item.pid}, camera {item.camid})"
        )
    if args.ranked_list is not None:
        draw_ranked_list(query, ranked, args.ranked_list)
        print(f"ranked list written to {args.ranked_list}")


if __name__ == "__main__":
    main()
