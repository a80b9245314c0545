r"""Extract ReID features of a folder of images or a dataset split, and optionally rank a query.

--model is a model folder (e.g. runs/joint/model) or a Hub repository id; or give --pretrained
imagenet (with --arch) instead.

    # features of a synthetic domain's gallery with the model dcsd train saved
    dcsd extract --model runs/joint/model --synthetic-domain synth0 --split gallery \
        --out gallery.safetensors --query-index 0 --ranked-list ranked.png
    # a folder of crops, with ImageNet-initialised ResNet50-DCSD
    dcsd extract --pretrained imagenet --images crops/ --out crops.safetensors
    # the 12 worst queries' ranked lists (lowest AP first), after k-reciprocal re-ranking
    dcsd extract --model runs/joint/model --synthetic-domain synth0 --ranked-lists worst.png \
        --num-queries 12 --rerank

The features (dcsd.FeatureExtractor: the card's transforms, L2-normalised) go to a features file
(dcsd.inference.save_features): features (N, 2048), pids and camids (-1 when unknown) as tensors
and the image paths as JSON in its metadata.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

import dcsd
from dcsd.cli.starts import load_start
from dcsd.data import ReIDItem, build_dataset, make_synthetic_domains
from dcsd.evaluate import (
    FeatureSet,
    pairwise_distance,
    rank_metrics,
    ranked_lists_figure,
    re_ranking_features,
    top_matches,
)
from dcsd.inference import save_features
from dcsd.models import list_models
from dcsd.models.pretrained import CONFIG_NAME, WEIGHTS_NAME

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def add_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcsd extract``."""
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
    parser.add_argument("--model", help="a model folder (config.json + weights) or a Hub id")
    parser.add_argument(
        "--pretrained",
        choices=["imagenet", *dcsd.list_pretrained()],
        help="instead of --model: the ImageNet backbone of --arch, or weights of the zoo",
    )
    parser.add_argument(
        "--arch", default="resnet50_dcsd", choices=list_models(), help="model for --pretrained"
    )
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("features.safetensors"))
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out when it is a model's weights"
    )
    parser.add_argument(
        "--query-index",
        type=int,
        help="rank the features against query N (the dataset's query split, or the folder's Nth)",
    )
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--ranked-list", type=Path, help="write the query's ranked list as PNG")
    parser.add_argument(
        "--ranked-lists",
        type=Path,
        help="rank every query against the gallery and draw the --num-queries lowest-AP ones, "
        "worst first, as PNG (needs a dataset or synthetic domain and --split gallery)",
    )
    parser.add_argument("--num-queries", type=int, default=10, help="rows of --ranked-lists")
    parser.add_argument(
        "--rerank",
        action="store_true",
        help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) against all queries",
    )


def check_outputs(args: argparse.Namespace, queries: list[ReIDItem]) -> None:
    """Refuse a bad --out or --query-index before any feature is extracted."""
    out = args.out
    if out.is_dir():
        raise SystemExit(f"--out {out} is a folder: give the features file's path")
    if not out.parent.is_dir():
        raise SystemExit(f"--out {out}: no such folder {out.parent}")
    is_weights = out.name == WEIGHTS_NAME or (out.parent / CONFIG_NAME).is_file()
    if out.exists() and is_weights and not args.overwrite:
        raise SystemExit(
            f"--out {out} is a model's weights (its folder holds {CONFIG_NAME}): writing features "
            "there destroys the model; pick another file, or pass --overwrite"
        )
    if args.query_index is not None and not 0 <= args.query_index < len(queries):
        raise SystemExit(
            f"--query-index must be in 0..{len(queries) - 1} ({len(queries)} queries), got "
            f"{args.query_index}"
        )


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


def build_extractor(args: argparse.Namespace) -> dcsd.FeatureExtractor:
    """--model (a model folder or Hub id) or --pretrained, with the weights' own size,
    mean/std and interpolation (their config.json) unless --image-size overrides the size."""
    if args.model is not None:
        model = dcsd.load_model(args.model, num_classes=0)
    elif args.pretrained is None:
        raise SystemExit("give --model (a model folder or Hub id) or --pretrained imagenet")
    else:  # a start of --arch: the ImageNet backbone, or weights of the zoo
        model = dcsd.create_model(args.arch)
        load_start(model, args.pretrained)
    return dcsd.FeatureExtractor(
        model.to(args.device),
        batch_size=args.batch_size,
        flip=args.flip,
        image_size=args.image_size,
    )


def embed(extractor: dcsd.FeatureExtractor, items: list[ReIDItem]) -> FeatureSet:
    return extractor.extract(
        [item.path for item in items], [item.pid for item in items], [item.camid for item in items]
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``dcsd extract``: embed the images, save the features, rank the queries asked for."""
    items, queries = load_items(args)
    check_outputs(args, queries)
    extractor = build_extractor(args)
    features = embed(extractor, items)
    save_features(features, args.out)
    print(f"{len(items)} images -> {tuple(features.features.shape)} features in {args.out}")
    if args.query_index is None and args.ranked_lists is None:
        return
    labelled = items[0].pid >= 0
    if args.ranked_lists is not None and not (labelled and args.split == "gallery"):
        raise SystemExit("--ranked-lists needs --dataset or --synthetic-domain and --split gallery")
    if labelled:
        g_pids = features.pids
        g_camids = features.camids
    else:  # a folder: every image its own identity, so only the query itself is left out
        g_pids, g_camids = np.arange(len(items)), np.zeros(len(items), dtype=np.int64)
    # Re-ranking and the ranked lists need every query; one query alone is enough otherwise.
    if args.rerank or args.ranked_lists is not None:
        query_items, rows = queries, None
    else:
        query_items, rows = [queries[args.query_index]], [0]
    query = embed(extractor, query_items)
    q_pids = query.pids if labelled else np.array([queries.index(q) for q in query_items])
    q_camids = query.camids if labelled else np.zeros(len(query_items), dtype=np.int64)
    q_feats, g_feats = query.features, features.features  # L2-normalised
    if args.rerank:
        distances = re_ranking_features(q_feats, g_feats)
    else:
        distances = pairwise_distance(q_feats, g_feats)

    if args.query_index is not None:
        row = args.query_index if rows is None else 0
        ranked = top_matches(
            distances[row : row + 1],
            q_pids[row : row + 1],
            g_pids,
            q_camids[row : row + 1],
            g_camids,
            args.top_k,
        )[0]
        item = query_items[row]
        print(f"query {item.path} (pid {item.pid}, camera {item.camid})")
        for rank, index in enumerate(ranked, start=1):
            match = labelled and items[index].pid == item.pid
            print(
                f"{rank:3d}. {'match' if match else '     '} d={distances[row, index]:.3f} "
                f"{items[index].path} (pid {items[index].pid}, camera {items[index].camid})"
            )
        if args.ranked_list is not None:
            row_items = [(items[i].path, labelled and items[i].pid == item.pid) for i in ranked]
            ranked_lists_figure([item.path], [row_items]).save(args.ranked_list)
            print(f"ranked list written to {args.ranked_list}")

    if args.ranked_lists is not None:
        result = rank_metrics(distances, q_pids, g_pids, q_camids, g_camids, per_query=True)
        print(
            f"{result['num_valid_queries']} queries: rank-1 {100 * result['cmc'][0]:.1f}, "
            f"mAP {100 * result['mAP']:.1f}{' (re-ranked)' if args.rerank else ''}"
        )
        worst = np.argsort(result["all_AP"], kind="stable")[: args.num_queries]
        chosen = result["query_index"][worst]
        ranked = top_matches(
            distances[chosen], q_pids[chosen], g_pids, q_camids[chosen], g_camids, args.top_k
        )
        ranked_lists_figure(
            [query_items[i].path for i in chosen],
            [
                [(items[j].path, bool(g_pids[j] == q_pids[i])) for j in row]
                for i, row in zip(chosen, ranked, strict=True)
            ],
            labels=[
                f"AP {100 * result['all_AP'][w]:.0f}% r{result['first_match_rank'][w]}"
                for w in worst
            ],
        ).save(args.ranked_lists)
        print(f"{len(chosen)} ranked lists, lowest AP first, written to {args.ranked_lists}")
