"""IdentityBatchSampler: P x K batches, determinism, epochs, DDP sharding, domain balance."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dcsd.data import (
    DomainItem,
    IdentityBatchSampler,
    ImageDataset,
    MultiDomainDataset,
    ReIDItem,
    build_train_transforms,
)


def random_pids(num_ids=40, seed=0):
    """Identity of each index; sizes 1..12 so some identities have fewer than K images."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, size=num_ids)
    pids = np.repeat(np.arange(num_ids) * 3 + 5, sizes)  # non-contiguous identity numbers
    return rng.permutation(pids).tolist()


def check_batch(batch, pids, p, k):
    assert len(batch) == p * k
    counts = Counter(pids[i] for i in batch)
    assert len(counts) == p and set(counts.values()) == {k}
    # Each identity's K images are contiguous, as torchreid's sampler yields them.
    for start in range(0, p * k, k):
        assert len({pids[i] for i in batch[start : start + k]}) == 1


def test_every_batch_is_p_identities_times_k_images():
    pids = random_pids()
    sampler = IdentityBatchSampler(pids, num_identities=8, num_instances=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == sampler.batches_per_epoch > 0
    groups = sum(max(1, Counter(pids)[p] // 4) for p in set(pids))
    assert len(batches) == groups // 8
    for batch in batches:
        check_batch(batch, pids, 8, 4)


def test_small_identities_are_sampled_with_replacement():
    pids = [0] * 2 + [1] * 6 + [2] + [3] * 4
    batches = list(IdentityBatchSampler(pids, num_identities=4, num_instances=4))
    for batch in batches:
        check_batch(batch, pids, 4, 4)
    first = batches[0]
    assert set(first[:4]) <= {i for i, p in enumerate(pids) if p == pids[first[0]]}


def test_deterministic_per_seed_and_epoch():
    pids = random_pids()

    def epoch(seed, epoch):
        sampler = IdentityBatchSampler(pids, num_identities=8, num_instances=4, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch(1, 0) == epoch(1, 0)
    assert epoch(1, 0) != epoch(1, 1)
    assert epoch(1, 0) != epoch(2, 0)


def test_epoch_uses_most_images():
    # With identities of exactly K images, an epoch sees every group once (no refills).
    pids = np.repeat(np.arange(32), 4).tolist()
    batches = list(IdentityBatchSampler(pids, num_identities=8, num_instances=4))
    assert sorted(i for b in batches for i in b) == list(range(len(pids)))


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_get_disjoint_batches_of_equal_count(drop_last):
    pids = random_pids(60)
    full = IdentityBatchSampler(pids, num_identities=4, num_instances=4, seed=7)
    full.set_epoch(2)
    reference = full.epoch_batches(2)
    ranks = []
    for rank in range(3):
        sampler = IdentityBatchSampler(
            pids, 4, 4, seed=7, num_replicas=3, rank=rank, drop_last=drop_last
        )
        sampler.set_epoch(2)
        ranks.append(list(sampler))
        assert len(ranks[-1]) == len(sampler)
    assert len({len(r) for r in ranks}) == 1
    if drop_last:
        positions = [reference.index(b) for r in ranks for b in r]
        assert len(positions) == len(set(positions)) == 3 * (len(reference) // 3)
        assert sorted(positions) == list(range(3 * (len(reference) // 3)))
    else:
        assert len(ranks[0]) == -(-len(reference) // 3)
        merged = {tuple(b) for r in ranks for b in r}
        assert merged == {tuple(b) for b in reference}


def test_rank_defaults_follow_torch_distributed(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
    sampler = IdentityBatchSampler(random_pids(60), num_identities=4, num_instances=4)
    assert (sampler.num_replicas, sampler.rank) == (4, 3)
    assert len(sampler) == sampler.batches_per_epoch // 4


def test_balance_domains_draws_evenly_from_unequal_domains():
    items = []
    for domain, (num_ids, per_id) in enumerate([(40, 8), (6, 3), (10, 5)]):
        for pid in range(num_ids):
            pid_items = [
                DomainItem(f"{domain}_{pid}_{i}", domain * 100 + pid, 0, domain)
                for i in range(per_id)
            ]
            items += pid_items
    pids = [item.pid for item in items]
    sampler = IdentityBatchSampler(items, num_identities=16, num_instances=4, balance_domains=True)
    for batch in sampler:
        check_batch(batch, pids, 16, 4)
        per_domain = Counter(items[i].domain for i in batch[::4])
        assert sorted(per_domain.values()) == [5, 5, 6]
    unbalanced = IdentityBatchSampler(items, num_identities=16, num_instances=4)
    share = Counter(items[i].domain for b in unbalanced for i in b[::4])
    assert share[0] > 2 * share[1]


def test_errors():
    with pytest.raises(ValueError, match="fewer than"):
        IdentityBatchSampler(list(range(10)), num_identities=16)
    items = [DomainItem("a", p, 0, 0) for p in range(20)] + [DomainItem("b", 99, 0, 1)] * 4
    with pytest.raises(ValueError, match="domain 1 has 1 identities"):
        IdentityBatchSampler(items, num_identities=4, balance_domains=True)
    with pytest.raises(ValueError, match="num_instances"):
        IdentityBatchSampler(random_pids(), num_instances=0)
    with pytest.raises(ValueError, match="rank"):
        IdentityBatchSampler(random_pids(), num_identities=4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="ranks"):
        IdentityBatchSampler(random_pids(), num_identities=16, num_replicas=64, rank=0)
    with pytest.raises(ValueError, match="several domains"):
        IdentityBatchSampler([DomainItem("a", 1, 0, 0), DomainItem("b", 1, 0, 1)], 1, 1)
    with pytest.raises(TypeError, match="pid"):
        IdentityBatchSampler(["a", "b"], 1, 1)
    with pytest.raises(ValueError, match="epoch"):
        IdentityBatchSampler(random_pids(), 4, 4).set_epoch(-1)


def test_data_loader_batches_of_synthetic_domains(synthetic_domains):
    joint = MultiDomainDataset(synthetic_domains)
    sampler = IdentityBatchSampler(joint.train, num_identities=6, num_instances=2, seed=0)
    transform = build_train_transforms(size=(64, 32), pad=3)
    loader = DataLoader(ImageDataset(joint.train, transform), batch_sampler=sampler)
    batch = next(iter(loader))
    assert batch["image"].shape == (12, 3, 64, 32)
    assert batch["image"].dtype == torch.float32
    assert len(set(batch["pid"].tolist())) == 6
    assert batch["camid"].max() < joint.num_cameras
    assert len(loader) == len(sampler)
    reid_items = [ReIDItem(i.path, i.pid, i.camid) for i in joint.train]
    assert IdentityBatchSampler(reid_items, 6, 2).epoch_batches(0) == sampler.epoch_batches(0)
