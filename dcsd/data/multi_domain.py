"""Several ReID datasets merged into one training set with domain and global camera ids.

Following the paper (Fig. 3), dataset ``d`` is domain ``d``; its identities and
cameras are shifted past those of the datasets before it, so that labels never collide:

    global pid   = pid_offsets[d]    + local train pid
    global camid = camera_offsets[d] + local camid

With Market-1501 (6 cameras), CUHK-SYSU (1), DukeMTMC-reID (8), CUHK03 (2) and MSMT17 (15)
in that order, the camera offsets are 0, 6, 7, 15, 17 and there are 32 global cameras.
Query and gallery stay per dataset, in local ids, for per-dataset evaluation.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

from .base import ReIDDataset, ReIDItem


class DomainItem(NamedTuple):
    """One training image of a multi-domain set: global identity, global camera, domain id.

    Unpacks as ``path, pid, camid, domain = item``.
    """

    path: str
    pid: int
    camid: int
    domain: int


class MultiDomainDataset:
    """Datasets joined for multi-domain training; dataset ``d`` becomes domain ``d``.

    Args:
        datasets: the datasets, in domain order; names must be distinct.

    Attributes:
        train: every training image with global pid / camid and its domain id.
        num_classes: identities over all training sets (size of the identity classifier).
        num_domains: number of datasets.
        num_cameras: cameras over all datasets (size of the camera classifier).
        domain_names: dataset name of each domain.
        pid_offsets: first global pid of each domain.
        camera_offsets: first global camera id of each domain.
        eval_splits: dataset name -> (query, gallery), local ids, in domain order.
        single_camera: dataset name -> whether it has one camera (then evaluation must keep
            same-camera matches, as for CUHK-SYSU).

    Raises:
        ValueError: no datasets, or two share a name.
    """

    def __init__(self, datasets: Sequence[ReIDDataset]) -> None:
        datasets = list(datasets)
        if not datasets:
            raise ValueError("datasets must hold at least one ReIDDataset, got none")
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be distinct, got {names}")
        self.datasets = datasets
        self.domain_names = names
        self.num_domains = len(datasets)
        self.pid_offsets = _offsets([d.num_train_pids for d in datasets])
        self.camera_offsets = _offsets([d.num_cameras for d in datasets])
        self.num_classes = self.pid_offsets[-1] + datasets[-1].num_train_pids
        self.num_cameras = self.camera_offsets[-1] + datasets[-1].num_cameras
        self.train = [
            DomainItem(
                item.path,
                self.pid_offsets[domain] + item.pid,
                self.camera_offsets[domain] + item.camid,
                domain,
            )
            for domain, dataset in enumerate(datasets)
            for item in dataset.train
        ]
        self.eval_splits: dict[str, tuple[list[ReIDItem], list[ReIDItem]]] = {
            d.name: (d.query, d.gallery) for d in datasets
        }
        self.single_camera = {d.name: d.num_cameras == 1 for d in datasets}

    def model_kwargs(self) -> dict[str, int]:
        """The model arguments this data needs: ``num_classes``, ``num_domains``, ``num_cameras``.

        ``dcsd.create_model("resnet50_dcsd", **data.model_kwargs())`` sizes the identity, domain
        and camera classifiers from the data; :class:`~dcsd.engine.Trainer` refuses a model
        whose heads differ.
        """
        return {
            "num_classes": self.num_classes,
            "num_domains": self.num_domains,
            "num_cameras": self.num_cameras,
        }

    def domain_of(self, name: str) -> int:
        """Domain id of the dataset called ``name``."""
        if name not in self.domain_names:
            raise ValueError(f"name must be one of {self.domain_names}, got {name!r}")
        return self.domain_names.index(name)

    def global_pid(self, domain: int, pid: int) -> int:
        """Global identity label of train label ``pid`` of ``domain``."""
        self._check(domain, pid, "pid", self.datasets[domain].num_train_pids)
        return self.pid_offsets[domain] + pid

    def global_camera_id(self, domain: int, camid: int) -> int:
        """Global camera id of camera ``camid`` of ``domain`` (works for query/gallery too)."""
        self._check(domain, camid, "camid", self.datasets[domain].num_cameras)
        return self.camera_offsets[domain] + camid

    def local_pid(self, global_pid: int) -> tuple[int, int]:
        """(domain, train label within that dataset) of a global identity label."""
        if not 0 <= global_pid < self.num_classes:
            raise ValueError(f"global_pid must be in 0..{self.num_classes - 1}, got {global_pid}")
        domain = bisect.bisect_right(self.pid_offsets, global_pid) - 1
        return domain, global_pid - self.pid_offsets[domain]

    def local_camera_id(self, global_camid: int) -> tuple[int, int]:
        """(domain, camera id within that dataset) of a global camera id."""
        if not 0 <= global_camid < self.num_cameras:
            raise ValueError(
                f"global_camid must be in 0..{self.num_cameras - 1}, got {global_camid}"
            )
        domain = bisect.bisect_right(self.camera_offsets, global_camid) - 1
        return domain, global_camid - self.camera_offsets[domain]

    def original_pid(self, global_pid: int) -> tuple[str, int]:
        """(dataset name, the dataset's own identity number) of a global identity label."""
        domain, label = self.local_pid(global_pid)
        return self.domain_names[domain], self.datasets[domain].train_original_pids[label]

    def summary(self) -> str:
        """One row per domain: train identities, images, cameras and their global ranges."""
        rule = "  " + "-" * 78
        lines = [
            f"=> multi-domain training set: {self.num_domains} domains, {self.num_classes} "
            f"identities, {len(self.train)} images, {self.num_cameras} cameras",
            rule,
            "  domain | dataset          | # ids | # images | # cams | global pids  | global cams",
            rule,
        ]
        for domain, dataset in enumerate(self.datasets):
            first_pid, first_cam = self.pid_offsets[domain], self.camera_offsets[domain]
            pids = f"{first_pid}-{first_pid + dataset.num_train_pids - 1}"
            cams = f"{first_cam}-{first_cam + dataset.num_cameras - 1}"
            lines.append(
                f"  {domain:6d} | {dataset.name:<16} | {dataset.num_train_pids:5d} | "
                f"{len(dataset.train):8d} | {dataset.num_cameras:6d} | {pids:<12} | {cams}"
            )
        lines.append(rule)
        return "\n".join(lines)

    def _check(self, domain: int, value: int, what: str, limit: int) -> None:
        if not 0 <= domain < self.num_domains:
            raise ValueError(f"domain must be in 0..{self.num_domains - 1}, got {domain}")
        if not 0 <= value < limit:
            raise ValueError(
                f"{what} must be in 0..{limit - 1} for domain {domain} "
                f"({self.domain_names[domain]}), got {value}"
            )


def _offsets(sizes: Sequence[int]) -> list[int]:
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    return offsets
