"""DataLoaders for joint training and per-dataset evaluation from a MultiDomainDataset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ..data import (
    IdentityBatchSampler,
    ImageDataset,
    MultiDomainDataset,
    ReIDDataset,
    build_test_transforms,
    build_train_transforms,
    check_images,
)
from .distributed import DistributedContext


@dataclass(frozen=True)
class EvalSplit:
    """One dataset's query and gallery loaders, and whether same-camera matches are ignored."""

    query: DataLoader
    gallery: DataLoader
    cross_camera: bool


def build_train_loader(
    dataset: MultiDomainDataset,
    *,
    image_size: tuple[int, int] = (256, 128),
    pad: int | None = None,
    num_identities: int = 16,
    num_instances: int = 4,
    balance_domains: bool = False,
    seed: int = 0,
    num_workers: int = 2,
    context: DistributedContext | None = None,
) -> DataLoader:
    """P identities x K images batches over all domains, with BoT's train transforms.

    ``pad`` (before the random crop) defaults to BoT's 10 pixels at 256x128, scaled with the
    image height, so small images are not shifted by a third of their width. Under DDP each rank
    draws its own disjoint batches of P x K images.
    """
    if pad is None:
        pad = max(1, round(10 * image_size[0] / 256))
    world_size = context.world_size if context else 1
    rank = context.rank if context else 0
    sampler = IdentityBatchSampler(
        dataset.train,
        num_identities=num_identities,
        num_instances=num_instances,
        balance_domains=balance_domains,
        seed=seed,
        num_replicas=world_size,
        rank=rank,
    )
    return DataLoader(
        ImageDataset(dataset.train, transform=build_train_transforms(size=image_size, pad=pad)),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def build_eval_splits(
    dataset: MultiDomainDataset | Sequence[ReIDDataset],
    *,
    image_size: tuple[int, int] = (256, 128),
    batch_size: int = 128,
    num_workers: int = 2,
    verify_images: bool = True,
) -> dict[str, EvalSplit]:
    """Query and gallery loaders of every dataset, in its own local ids.

    ``dataset`` is the training set (its datasets are evaluated, in domain order) or any list of
    datasets, e.g. unseen ones for cross-dataset (domain generalisation) evaluation.
    Single-camera datasets (CUHK-SYSU) keep same-camera matches. With ``verify_images`` every
    query and gallery file is opened and verified now (:func:`dcsd.data.check_images`), so a bad
    file stops the run before training, not at its first evaluation.
    """
    datasets = dataset.datasets if isinstance(dataset, MultiDomainDataset) else list(dataset)
    if not datasets or not all(isinstance(d, ReIDDataset) for d in datasets):
        raise TypeError(
            "dataset must be a MultiDomainDataset or a non-empty list of ReIDDataset, got "
            f"{type(dataset).__name__}"
        )
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be distinct, got {names}")
    transform = build_test_transforms(size=image_size)
    splits = {}
    for domain, data in enumerate(datasets):
        if verify_images:
            check_images(item.path for item in (*data.query, *data.gallery))

        def loader(items, domain=domain):
            return DataLoader(
                ImageDataset(items, transform=transform, domain=domain),
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
            )

        splits[data.name] = EvalSplit(
            loader(data.query), loader(data.gallery), cross_camera=data.num_cameras > 1
        )
    return splits
