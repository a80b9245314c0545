r"""t-SNE of test-image embeddings of several models side by side, coloured by domain and marked
by camera: how far apart the domains sit in each model's feature space.

    python examples/plot_embeddings.py --model static=runs/static/model \
        --model dcsd=runs/dcsd/model --image-size 64 32 --out docs/embeddings_tsne.png
    python examples/plot_embeddings.py --data-root /data --datasets market1501,dukemtmc \
        --model dcsd=runs/joint/model --max-images 500

Also prints, per model, the domain purity of each image's 10 nearest neighbours (the fraction
from its own domain; 1/D when domains are fully mixed). Needs the viz extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import dcsd
from dcsd.data import ImageDataset, build_dataset, build_eval_transforms, make_synthetic_domains
from dcsd.evaluate import embedding_map, extract_features, plot_embedding_maps


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a panel: its title and a model folder or Hub id (repeat for side by side)",
    )
    parser.add_argument("--data-root", type=Path, help="real datasets (default: synthetic)")
    parser.add_argument("--datasets", help="comma-separated names (default: all synthetic)")
    parser.add_argument("--max-images", type=int, default=400, help="test images per dataset")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("embeddings_tsne.png"))
    return parser.parse_args()


def load_datasets(args: argparse.Namespace) -> list:
    if args.data_root is None:
        datasets = make_synthetic_domains()
    else:
        if not args.datasets:
            raise SystemExit("--data-root needs --datasets")
        datasets = [build_dataset(n.strip(), args.data_root) for n in args.datasets.split(",")]
    if args.data_root is None and args.datasets:
        names = args.datasets.split(",")
        datasets = [d for d in datasets if d.name in names]
    return datasets


def domain_purity(features: torch.Tensor, domains: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each image's k nearest neighbours (cosine) from its own domain."""
    unit = F.normalize(features, dim=1)
    similarity = unit @ unit.t()
    similarity.fill_diagonal_(-2)
    neighbours = similarity.topk(k, dim=1).indices.numpy()
    return float((domains[neighbours] == domains[:, None]).mean())


def main() -> None:
    args = parse_args()
    panels = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model must be NAME=PATH, got {spec!r}")
        panels[name] = path
    datasets = load_datasets(args)
    rng = np.random.default_rng(args.seed)
    items, domains = [], []
    for domain, dataset in enumerate(datasets):
        test = dataset.query + dataset.gallery
        chosen = rng.permutation(len(test))[: args.max_images]
        items += [test[i] for i in sorted(chosen)]
        domains += [domain] * len(chosen)
    domains = np.array(domains)
    cameras = np.array([item.camid for item in items])

    maps = {}
    for name, path in panels.items():
        model = dcsd.load_model(path, num_classes=0).to(args.device).eval()
        transform = build_eval_transforms(model.pretrained_cfg, size=args.image_size)
        loader = DataLoader(ImageDataset(items, transform=transform), batch_size=args.batch_size)
        features = extract_features(model, loader, device=args.device).features
        purity = domain_purity(features, domains)
        print(
            f"{name}: {len(items)} test images of {len(datasets)} domains; own-domain share of "
            f"the 10 nearest neighbours {purity:.3f} (chance {1 / len(datasets):.3f})"
        )
        maps[f"{name} (10-NN own-domain share {purity:.2f})"] = embedding_map(features, args.seed)
    plot_embedding_maps(maps, domains, cameras, [d.name for d in datasets], args.out)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
