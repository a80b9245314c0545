"""Draw a grid of synthetic ReID samples: one row per (domain, camera), one column per identity.

The same identity keeps its column across the cameras of its domain, so the camera shifts
(illumination, cast, background, viewpoint, blur) show down a column and the domain shifts
between row blocks. An empty cell means the identity was not seen by that camera.

    python examples/show_synthetic.py --out docs/synthetic_grid.png
    python examples/show_synthetic.py --preset conflict --out docs/synthetic_conflict_grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from dcsd.data import make_synthetic_domains


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_grid.png"))
    parser.add_argument("--root", type=Path, default=None, help="synthetic cache folder")
    parser.add_argument("--num-domains", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="default", help="generator preset: default, conflict")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--identities", type=int, default=8, help="columns per domain")
    parser.add_argument("--zoom", type=int, default=2, help="pixel zoom of each sample")
    args = parser.parse_args()

    domains = make_synthetic_domains(
        root=args.root,
        num_domains=args.num_domains,
        image_size=(args.height, args.width),
        scale=args.scale,
        seed=args.seed,
        preset=args.preset,
    )
    cell_h, cell_w = args.height * args.zoom, args.width * args.zoom
    label_w, gap = 90, 4
    rows = sum(d.num_cameras for d in domains)
    grid = Image.new(
        "RGB",
        (label_w + args.identities * (cell_w + gap), rows * (cell_h + gap) + gap * len(domains)),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    y = 0
    for dataset in domains:
        # First image of each (identity, camera); identities seen by the most cameras first.
        first = {}
        for item in dataset.train:
            first.setdefault((item.pid, item.camid), item.path)
        coverage = {}
        for pid, _ in first:
            coverage[pid] = coverage.get(pid, 0) + 1
        pids = sorted(coverage, key=lambda pid: (-coverage[pid], pid))[: args.identities]
        for camid in range(dataset.num_cameras):
            draw.text((4, y + cell_h // 2 - 6), f"{dataset.name} cam{camid}", fill="black")
            for column, pid in enumerate(pids):
                x = label_w + column * (cell_w + gap)
                path = first.get((pid, camid))
                if path is None:
                    draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=(235, 235, 235))
                    continue
                with Image.open(path) as image:
                    grid.paste(image.resize((cell_w, cell_h), Image.NEAREST), (x, y))
            y += cell_h + gap
        y += gap
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out} ({grid.width}x{grid.height})")


if __name__ == "__main__":
    main()
