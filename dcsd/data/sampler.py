"""P identities x K images per batch, over one or several domains, with DDP sharding."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from dcsd.validation import check_int


class IdentityBatchSampler(Sampler[list[int]]):
    """Batches of P identities x K images each, for a DataLoader's ``batch_sampler``.

    Each identity's images are shuffled and cut into groups of K (an identity with fewer than
    K images gives one group drawn with replacement, as torchreid's RandomIdentitySampler does;
    leftover images short of a group wait for a later epoch). A batch takes one group from each
    of P distinct identities drawn at random among those with groups left. An epoch has
    ``total groups // P`` batches; when too few identities have groups left, the spent ones get
    fresh groups, so every batch is full.

    With ``balance_domains`` each batch takes ``P // D`` identities from each of the D domains
    (the remaining ``P % D`` from domains drawn at random), whatever their sizes: small domains
    are then seen more often than in plain random mixing.

    The batches of an epoch depend only on ``(seed, epoch)``. Under DDP every rank computes the
    same epoch and takes every ``num_replicas``-th batch from position ``rank``: ranks get
    disjoint batches, the same number each. Call :meth:`set_epoch` before each epoch, as with
    PyTorch's ``DistributedSampler``.

    Args:
        items_or_pids: identity of each dataset index: items with ``.pid`` (and ``.domain``,
            else domain 0, e.g. :class:`ReIDItem`), or plain ints.
        num_identities: P, identities per batch.
        num_instances: K, images per identity per batch.
        balance_domains: draw the same number of identities from each domain in every batch.
        seed: base seed, >= 0.
        num_replicas: number of DDP ranks; default the torch.distributed world size (1 if not
            initialised).
        rank: this rank; default the torch.distributed rank (0 if not initialised).
        drop_last: drop the last ``batches % num_replicas`` batches of an epoch so that every
            rank gets the same count; if False, ranks that run short repeat batches from the
            start of the epoch (then the repeated batches are shared with another rank).

    Raises:
        ValueError: fewer identities than P (per domain, when balancing), bad P / K / seed /
            rank, or fewer batches than ranks with ``drop_last``.
    """

    def __init__(
        self,
        items_or_pids: Sequence[Any],
        num_identities: int = 16,
        num_instances: int = 4,
        balance_domains: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = True,
    ) -> None:
        num_identities = check_int("num_identities", num_identities, 1)
        num_instances = check_int("num_instances", num_instances, 1)
        seed = check_int("seed", seed, 0)
        if num_replicas is None:
            num_replicas = dist.get_world_size() if _distributed() else 1
        if rank is None:
            rank = dist.get_rank() if _distributed() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got num_replicas="
                f"{num_replicas}, rank={rank}"
            )
        pids, domains = _identities(items_or_pids)
        self.num_identities = int(num_identities)
        self.num_instances = int(num_instances)
        self.balance_domains = balance_domains
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.epoch = 0

        order = np.argsort(pids, kind="stable")
        unique, starts = np.unique(pids[order], return_index=True)
        self._indices = dict(zip(unique.tolist(), np.split(order, starts[1:]), strict=True))
        self._domain_pids: dict[int, list[int]] = {}
        for pid, indices in self._indices.items():
            pid_domains = np.unique(domains[indices])
            if pid_domains.size != 1:
                raise ValueError(f"identity {pid} appears in several domains {pid_domains}")
            self._domain_pids.setdefault(int(pid_domains[0]), []).append(pid)
        if not balance_domains:
            self._domain_pids = {0: sorted(self._indices)}
        needed = math.ceil(self.num_identities / len(self._domain_pids))
        for domain, domain_pids in self._domain_pids.items():
            if len(domain_pids) < min(needed, self.num_identities):
                where = f"domain {domain}" if balance_domains else "the dataset"
                raise ValueError(
                    f"{where} has {len(domain_pids)} identities, fewer than the {needed} a batch "
                    f"of num_identities={self.num_identities} needs from it"
                )
        groups = sum(max(1, len(i) // self.num_instances) for i in self._indices.values())
        self.batches_per_epoch = groups // self.num_identities
        if drop_last:
            self._length = self.batches_per_epoch // self.num_replicas
            if self._length == 0:
                raise ValueError(
                    f"an epoch has {self.batches_per_epoch} batches, fewer than the "
                    f"{self.num_replicas} ranks; use drop_last=False or smaller batches"
                )
        else:
            self._length = math.ceil(self.batches_per_epoch / self.num_replicas)

    @property
    def batch_size(self) -> int:
        """Images per batch, P x K."""
        return self.num_identities * self.num_instances

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = check_int("epoch", epoch, 0)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return self._length

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)
        total = self._length * self.num_replicas
        # Without drop_last, wrap around to give every rank the same number of batches.
        batches = (batches * math.ceil(total / len(batches)))[:total]
        yield from batches[self.rank :: self.num_replicas]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` over every rank, before sharding; each P x K indices."""
        rng = np.random.default_rng([self.seed, epoch])
        groups: dict[int, list[np.ndarray]] = {}
        available: dict[int, list[int]] = {d: [] for d in self._domain_pids}
        for domain in sorted(self._domain_pids):
            for pid in self._domain_pids[domain]:
                groups[pid] = self._fresh_groups(rng, pid)
                available[domain].append(pid)
        domains = sorted(self._domain_pids)
        base, extra = divmod(self.num_identities, len(domains))
        batches = []
        for _ in range(self.batches_per_epoch):
            quota = dict.fromkeys(domains, base)
            for d in rng.choice(len(domains), size=extra, replace=False):
                quota[domains[d]] += 1
            batch: list[int] = []
            for domain in domains:
                pool = available[domain]
                if len(pool) < quota[domain]:
                    spent = [p for p in self._domain_pids[domain] if not groups[p]]
                    for pid in spent:
                        groups[pid] = self._fresh_groups(rng, pid)
                    pool.extend(spent)
                chosen = sorted(rng.choice(len(pool), size=quota[domain], replace=False))
                for position in reversed(chosen):
                    pid = pool[position]
                    batch.extend(groups[pid].pop().tolist())
                    if not groups[pid]:
                        pool.pop(position)
            batches.append(batch)
        return batches

    def _fresh_groups(self, rng: np.random.Generator, pid: int) -> list[np.ndarray]:
        indices = self._indices[pid]
        k = self.num_instances
        if len(indices) < k:
            return [rng.choice(indices, size=k, replace=True)]
        shuffled = rng.permutation(indices)
        return [shuffled[i * k : (i + 1) * k] for i in range(len(indices) // k)]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _identities(items_or_pids: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    if len(items_or_pids) == 0:
        raise ValueError("items_or_pids is empty")
    first = items_or_pids[0]
    if isinstance(first, Integral):
        pids = np.asarray(items_or_pids, dtype=np.int64)
        return pids, np.zeros_like(pids)
    if not hasattr(first, "pid"):
        raise TypeError(
            f"items_or_pids must hold ints or items with .pid, got {type(first).__name__}"
        )
    pids = np.asarray([item.pid for item in items_or_pids], dtype=np.int64)
    domains = np.asarray([getattr(item, "domain", 0) for item in items_or_pids], dtype=np.int64)
    return pids, domains
