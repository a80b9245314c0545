"""A validation split made of training identities, so settings are never chosen on the test set.

``holdout_identities`` moves some training identities out of a dataset's train split and turns
their images into a validation query / gallery pair under the dataset's own protocol (every
query has a true match in the gallery from another camera). The test query / gallery is dropped
from the returned dataset, so nothing trained or tuned on it can touch the test split.
"""

from __future__ import annotations

import numpy as np

from dcsd.validation import check_int

from .base import ReIDDataset, ReIDItem, relabel


def holdout_identities(
    dataset: ReIDDataset, num_identities: int, *, seed: int = 0, queries_per_identity: int = 2
) -> ReIDDataset:
    """The dataset with ``num_identities`` train identities held out as a validation set.

    Held-out identities are drawn at random (reproducibly from ``seed``) among those seen by at
    least two cameras. For each, one image from each of up to ``queries_per_identity`` cameras
    becomes a query; its other images form the gallery, so every query has a cross-camera match.
    The remaining train identities are relabelled 0..P-1.

    Args:
        dataset: the dataset to split (its test query / gallery are not used).
        num_identities: identities to hold out; at least 1, leaving at least 2 for training.
        seed: which identities and images are drawn.
        queries_per_identity: queries per held-out identity (>= 1), from distinct cameras.

    Returns:
        A :class:`ReIDDataset` named ``dataset.name`` whose ``train`` is the remaining training
        identities and whose ``query`` / ``gallery`` are the validation images (identity numbers:
        the dataset's own, from ``train_original_pids``).

    Raises:
        ValueError: too few identities seen by two cameras, or arguments out of range.
    """
    check_int("num_identities", num_identities, 1)
    if not 1 <= num_identities <= dataset.num_train_pids - 2:
        raise ValueError(
            f"num_identities must be in 1..{dataset.num_train_pids - 2} for {dataset.name} "
            f"({dataset.num_train_pids} train identities, 2 must stay), got {num_identities}"
        )
    check_int("queries_per_identity", queries_per_identity, 1)
    by_pid: dict[int, list[ReIDItem]] = {}
    for item in dataset.train:
        by_pid.setdefault(item.pid, []).append(item)
    eligible = sorted(pid for pid, items in by_pid.items() if len({i.camid for i in items}) >= 2)
    if len(eligible) < num_identities:
        raise ValueError(
            f"{dataset.name}: only {len(eligible)} train identities are seen by two or more "
            f"cameras; cannot hold out {num_identities} for validation"
        )
    rng = np.random.default_rng(seed)
    held = {int(pid) for pid in rng.choice(eligible, size=num_identities, replace=False)}
    query: list[ReIDItem] = []
    gallery: list[ReIDItem] = []
    for pid in sorted(held):
        own = dataset.train_original_pids[pid]
        items = [ReIDItem(i.path, own, i.camid) for i in by_pid[pid]]
        cameras = sorted({i.camid for i in items})
        chosen = rng.permutation(cameras)[: min(queries_per_identity, len(cameras))]
        picked = [int(rng.choice([j for j, i in enumerate(items) if i.camid == c])) for c in chosen]
        for j in list(picked):
            # A query whose camera holds the identity's only other images would have no match.
            rest = [i for k, i in enumerate(items) if k not in picked]
            if not any(i.camid != items[j].camid for i in rest):
                picked.remove(j)
        query += [items[j] for j in sorted(picked)]
        gallery += [item for j, item in enumerate(items) if j not in picked]
    kept = [item for item in dataset.train if item.pid not in held]
    train, labels = relabel(kept)
    original = [dataset.train_original_pids[label] for label in labels]
    return ReIDDataset(dataset.name, dataset.root, train, query, gallery, original)
