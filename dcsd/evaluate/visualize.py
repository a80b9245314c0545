"""Pictures of an evaluation: ranked lists, an embedding map, training curves.

Ranked lists need only Pillow; the embedding map and the curves need the ``viz`` extra
(matplotlib, scikit-learn): ``pip install "dcsd[viz]"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from dcsd.evaluate.rank import ArrayLike, _distmat_tensor, _id_array

MATCH, OTHER, UNKNOWN = "lime", "red", "gray"


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module.split('.')[0]} is needed for this plot: pip install 'dcsd[viz]'"
        ) from error


def top_matches(
    distmat: np.ndarray | torch.Tensor,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    top_k: int = 10,
    cross_camera: bool = True,
) -> list[list[int]]:
    """The ``top_k`` gallery indices of every query, closest first, as the protocol ranks them.

    Equal distances keep gallery order (a stable sort); with ``cross_camera`` the gallery items
    of the query's identity and camera are left out (Market-1501 protocol), so a query can get
    fewer than ``top_k``.

    Args:
        distmat: (Q, G) distances, smaller is closer.
        q_pids, g_pids, q_camids, g_camids: (Q,), (G,), (Q,), (G,) labels.
        top_k: items per query.
        cross_camera: leave out same-identity, same-camera gallery items.

    Returns:
        Q lists of at most ``top_k`` gallery indices.
    """
    distances = _distmat_tensor(distmat).detach().cpu()
    q_pids, g_pids = _id_array("q_pids", q_pids), _id_array("g_pids", g_pids)
    q_camids, g_camids = _id_array("q_camids", q_camids), _id_array("g_camids", g_camids)
    if distances.shape != (q_pids.size, g_pids.size) or q_camids.shape != q_pids.shape:
        raise ValueError(
            f"distmat must be (len(q_pids), len(g_pids)) = ({q_pids.size}, {g_pids.size}) and "
            f"q_camids as long as q_pids, got {tuple(distances.shape)} and {q_camids.size}"
        )
    if g_camids.shape != g_pids.shape:
        raise ValueError(f"g_camids must have {g_pids.size} entries, got {g_camids.size}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ranked = []
    for row, order in enumerate(distances.argsort(dim=1, stable=True).numpy()):
        if cross_camera:
            junk = (g_pids[order] == q_pids[row]) & (g_camids[order] == q_camids[row])
            order = order[~junk]
        ranked.append(order[:top_k].tolist())
    return ranked


def ranked_lists_figure(
    queries: Sequence[str],
    ranked: Sequence[Sequence[tuple[str, bool | None]]],
    labels: Sequence[str] | None = None,
    image_size: tuple[int, int] = (128, 64),
) -> Image.Image:
    """One row per query: its image (white frame), then its ranked gallery images.

    Frames: green for a true match, red for another identity, grey when unknown (``None``), as
    torchreid's ``visualize_ranked_results`` and fast-reid's visualiser draw them.

    Args:
        queries: Q query image paths.
        ranked: for each query, ``(gallery image path, is a true match)`` in rank order.
        labels: optional text per row (e.g. ``"AP 12.5%"``), written left of the query.
        image_size: (height, width) each image is resized to.

    Returns:
        The picture (RGB); ``.save("ranked.png")`` writes it.
    """
    if len(ranked) != len(queries) or (labels is not None and len(labels) != len(queries)):
        raise ValueError(
            f"ranked (and labels) need one entry per query ({len(queries)}), got {len(ranked)}"
            + ("" if labels is None else f" and {len(labels)}")
        )
    if not queries:
        raise ValueError("queries must not be empty")
    height, width = image_size
    border, gap = 4, 4
    label_width = 0 if labels is None else 8 * max(len(label) for label in labels) + 8
    slot = width + 2 * border + gap
    columns = 1 + max(len(row) for row in ranked)
    canvas = Image.new(
        "RGB", (label_width + columns * slot, len(queries) * (height + 2 * border + gap)), "black"
    )
    draw = ImageDraw.Draw(canvas)
    colours = {True: MATCH, False: OTHER, None: UNKNOWN}
    for index, (query, row) in enumerate(zip(queries, ranked, strict=True)):
        top = index * (height + 2 * border + gap)
        if labels is not None:
            draw.text((4, top + height // 2), labels[index], fill="white")
        for column, (path, match) in enumerate([(query, "query"), *row]):
            left = label_width + column * slot
            colour = "white" if match == "query" else colours[match]
            draw.rectangle(
                [left, top, left + width + 2 * border - 1, top + height + 2 * border - 1], colour
            )
            crop = Image.open(path).convert("RGB").resize((width, height))
            canvas.paste(crop, (left + border, top + border))
    return canvas


def embedding_map(features: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates (scikit-learn, perplexity 30 or less) of (N, D) features.

    Features are L2-normalised first (they are ranked that way). Returns (N, 2) float64.
    """
    manifold = _require("sklearn.manifold")
    features = torch.as_tensor(features).detach().float().cpu()
    if features.dim() != 2 or features.shape[0] < 3:
        raise ValueError(f"features must be (N, D) with N >= 3, got {tuple(features.shape)}")
    features = torch.nn.functional.normalize(features, dim=1).numpy()
    perplexity = min(30.0, (features.shape[0] - 1) / 3)
    tsne = manifold.TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(features)


def plot_embedding_maps(
    maps: dict[str, np.ndarray],
    domains: ArrayLike,
    cameras: ArrayLike,
    domain_names: Sequence[str],
    path: str | Path,
) -> None:
    """Side-by-side scatter plots of 2-D embeddings, coloured by domain, marked by camera.

    Args:
        maps: panel title -> (N, 2) coordinates (e.g. :func:`embedding_map` of each model),
            all of the same N images.
        domains: (N,) domain index of each image (colour).
        cameras: (N,) camera index within its domain (marker).
        domain_names: name of each domain index, for the legend.
        path: PNG file to write.
    """
    plt = _require("matplotlib.pyplot")
    domains, cameras = _id_array("domains", domains), _id_array("cameras", cameras)
    if not maps:
        raise ValueError("maps must hold at least one panel")
    for title, coords in maps.items():
        if np.shape(coords) != (domains.size, 2) or cameras.size != domains.size:
            raise ValueError(
                f"maps[{title!r}] must be ({domains.size}, 2) like domains and cameras, got "
                f"{np.shape(coords)} and {cameras.size} cameras"
            )
    markers = "o^sDv<>pP*hX"
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 5.2), squeeze=False)
    for axis, (title, coords) in zip(axes[0], maps.items(), strict=True):
        for domain in np.unique(domains):
            for camera in np.unique(cameras[domains == domain]):
                chosen = (domains == domain) & (cameras == camera)
                axis.scatter(
                    coords[chosen, 0],
                    coords[chosen, 1],
                    s=14,
                    color=colours(domain % 10),
                    marker=markers[camera % len(markers)],
                    alpha=0.75,
                    linewidths=0,
                    label=domain_names[domain]
                    if camera == cameras[domains == domain].min()
                    else None,
                )
        axis.set_title(title)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][0].legend(title="domain (colour); marker = camera", fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def read_training_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` the :class:`~dcsd.engine.Trainer` writes, one per epoch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not a JSON line: {error}") from error
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def plot_training_log(records: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Loss parts per epoch, and mAP and rank-1 per dataset per evaluation, as one PNG.

    Args:
        records: :func:`read_training_log`'s records (``epoch``, loss parts, optional ``eval``).
        path: PNG file to write.
    """
    plt = _require("matplotlib.pyplot")
    if not records or any("epoch" not in record for record in records):
        raise ValueError("records must be a non-empty list of log records with an 'epoch'")
    epochs = [record["epoch"] for record in records]
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(11, 4))
    for part in ("loss", "id", "triplet", "domain", "camera"):
        values = [record.get(part) for record in records]
        if all(value is not None for value in values) and any(values):
            losses.plot(epochs, values, marker=".", label=part)
    losses.set(xlabel="epoch", ylabel="loss", title="training loss and its parts")
    losses.legend()
    evaluated = [record for record in records if record.get("eval")]
    for dataset in dict.fromkeys(name for record in evaluated for name in record["eval"]):
        points = [(r["epoch"], r["eval"][dataset]) for r in evaluated if dataset in r["eval"]]
        (line,) = scores.plot(
            [e for e, _ in points], [100 * m["mAP"] for _, m in points], marker="o", label=dataset
        )
        scores.plot(
            [e for e, _ in points],
            [100 * m["cmc"][0] for _, m in points],
            marker="x",
            linestyle="--",
            color=line.get_color(),
        )
    scores.set(xlabel="epoch", ylabel="%", title="mAP (solid) and rank-1 (dashed) per dataset")
    if evaluated:
        scores.legend()
    ticker = _require("matplotlib.ticker")
    for axis in (losses, scores):
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
