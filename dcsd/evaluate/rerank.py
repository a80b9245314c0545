"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), in torch, without any (N, N) matrix beyond the distances given.

The published code (and torchreid's / fast-reid's copies of it) builds the joint distance matrix
of all N = Q + G images, its full argsort and a dense (N, N) encoding V: about 35 GB each in
float32 at MSMT17 size (N = 93,820). Here the joint matrix is only ever seen a block of rows at
a time: a first pass keeps each row's nearest neighbours, a second the distances to the few
images of each row's k-reciprocal set. V is sparse (a few dozen entries a row), the local query
expansion is a sparse product, and the Jaccard distance is a join over V's columns. What is
stored is O(N * k1) beside the (Q, G) result.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import torch

from dcsd.evaluate.distance import Metric, check_feature_pair, evaluation_dtype, pairwise_distance

RowFn = Callable[[int, int], torch.Tensor]

# Distances per block of rows, and (query, gallery) pairs per block of the Jaccard join.
_BLOCK_ELEMENTS = 1 << 24
_JOIN_PAIRS = 1 << 24


def _available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the CUDA driver's count, or the kernel's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_memory(device: torch.device, needed: dict[str, int]) -> None:
    """Raise ``MemoryError`` naming what the re-ranking needs when it would not fit."""
    total = sum(needed.values())
    available = _available_bytes(device)
    if total > available:
        parts = ", ".join(f"{name} {size / 2**30:.2f} GiB" for name, size in needed.items())
        raise MemoryError(
            f"re_ranking needs about {total / 2**30:.2f} GiB of {device} memory ({parts}), "
            f"but only {available / 2**30:.2f} GiB is available; evaluate fewer queries at a "
            f"time, or run on a device with more memory"
        )


def _reciprocal_mask(neighbours: torch.Tensor, chunk: int) -> torch.Tensor:
    """(N, k) bool: whether row i is among the neighbours of its own neighbour ``[i, a]``."""
    num_all = neighbours.shape[0]
    mask = torch.empty(neighbours.shape, dtype=torch.bool, device=neighbours.device)
    for start in range(0, num_all, chunk):
        rows = neighbours[start : start + chunk]
        own = torch.arange(start, start + rows.shape[0], device=rows.device)
        mask[start : start + chunk] = (neighbours[rows] == own[:, None, None]).any(dim=2)
    return mask


def _expansion_sets(
    rows: torch.Tensor,
    neighbours: torch.Tensor,
    reciprocal: torch.Tensor,
    half_neighbours: torch.Tensor,
    half_reciprocal: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-reciprocal expansion set of each row: (R, M) sorted indices and validity mask.

    R(i) = the k1-reciprocal neighbours of i; each of them, c, adds its own k1/2-reciprocal set
    R(c) when more than two thirds of R(c) lies in R(i) (paper Eq. 9).
    """
    num_all = neighbours.shape[0]
    own = neighbours[rows]  # (R, k1+1)
    own_mask = reciprocal[rows]
    cand = half_neighbours[own]  # (R, k1+1, kh+1): R(c) of each neighbour c, before masking
    cand_mask = half_reciprocal[own] & own_mask[:, :, None]
    in_own = ((cand[..., None] == own[:, None, None, :]) & own_mask[:, None, None, :]).any(-1)
    overlap = (in_own & cand_mask).sum(-1).double()
    size = cand_mask.sum(-1).double()
    # The published test, in float64 as numpy does it: (2/3) * 6 is just below 4, so 4 of 6 pass.
    selected = own_mask & (overlap > (2.0 / 3) * size)
    cand_mask &= selected[:, :, None]
    values = torch.cat([own, cand.flatten(1)], dim=1)
    valid = torch.cat([own_mask, cand_mask.flatten(1)], dim=1)
    values = values.masked_fill(~valid, num_all).sort(dim=1).values
    unique = values != num_all
    unique[:, 1:] &= values[:, 1:] != values[:, :-1]
    return values.masked_fill(~unique, 0), unique


def _jaccard_into(
    out: torch.Tensor, encoding: torch.Tensor, num_query: int, lambda_value: float
) -> None:
    """``out = (1 - lambda) * jaccard + out`` for the (Q, G) block, from the sparse encoding V.

    sum_k min(V[i, k], V[j, k]) is gathered by joining each query's entries with the gallery
    entries of the same column; rows of V sum to 1, so the Jaccard distance is
    1 - m / (2 - m) (paper Eq. 11).
    """
    device = out.device
    num_gallery = out.shape[1]
    rows, cols = encoding.indices()
    values = encoding.values()
    num_all = encoding.shape[1]
    # Gallery entries grouped by column (CSC): column k's are col_start[k] .. col_start[k+1].
    gallery = rows >= num_query
    order = torch.argsort(cols[gallery], stable=True)
    g_rows = rows[gallery][order] - num_query
    g_values = values[gallery][order]
    col_count = torch.bincount(cols[gallery], minlength=num_all)
    col_start = col_count.cumsum(0) - col_count
    # Query entries, ordered by row (coalesced COO is row-major), cut into blocks of rows
    # whose joins hold about _JOIN_PAIRS pairs.
    query = rows < num_query
    q_rows, q_cols, q_values = rows[query], cols[query], values[query]
    pairs_per_entry = col_count[q_cols]
    pairs_per_row = torch.zeros(num_query, dtype=torch.int64, device=device)
    pairs_per_row.index_add_(0, q_rows, pairs_per_entry)
    row_ends = pairs_per_row.cumsum(0).cpu().numpy()
    entry_ends = torch.bincount(q_rows, minlength=num_query).cumsum(0).cpu().numpy()
    start = 0
    while start < num_query:
        base = row_ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(row_ends, base + _JOIN_PAIRS, side="right")), start + 1)
        first = int(entry_ends[start - 1]) if start else 0
        last = int(entry_ends[stop - 1])
        counts = pairs_per_entry[first:last]
        offsets = torch.arange(int(counts.sum()), device=device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts
        )
        positions = torch.repeat_interleave(col_start[q_cols[first:last]], counts) + offsets
        minimum = torch.minimum(
            torch.repeat_interleave(q_values[first:last], counts), g_values[positions]
        )
        flat = (torch.repeat_interleave(q_rows[first:last], counts) - start) * num_gallery
        overlap = torch.zeros((stop - start) * num_gallery, dtype=out.dtype, device=device)
        overlap.index_add_(0, flat + g_rows[positions], minimum)
        jaccard = 1 - overlap / (2 - overlap)
        out[start:stop] += jaccard.view(stop - start, num_gallery) * (1 - lambda_value)
        start = stop


def k_reciprocal_rerank(
    rows: RowFn,
    num_query: int,
    num_all: int,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Re-rank from a function giving rows of the joint (N, N) distance matrix.

    The engine behind :func:`re_ranking` and :func:`re_ranking_features`; the joint matrix is
    ``[[q_q, q_g], [q_g.T, g_g]]`` over the N = Q + G images, queries first, and ``rows(start,
    stop)`` returns its rows ``start:stop`` as a (stop - start, N) tensor on ``device``.
    Computed in ``dtype`` (float32 or float64).

    Returns:
        (Q, G) re-ranked distances in ``dtype`` on ``device``.
    """
    device = torch.device(device)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    value_bytes = torch.finfo(dtype).bits // 8
    num_gallery = num_all - num_query
    for name, value in (("k1", k1), ("k2", k2)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if num_query < 1 or num_gallery < 1:
        raise ValueError(
            f"need at least one query and one gallery image, got {num_query} and {num_gallery}"
        )
    if k1 + 1 > num_all or k2 > num_all:
        raise ValueError(
            f"k1 + 1 = {k1 + 1} and k2 = {k2} must not exceed the number of images "
            f"(queries + gallery = {num_all})"
        )
    half = int(np.around(k1 / 2.0))
    width = (k1 + 1) * (half + 2)  # own neighbours plus each one's half-size set
    block = max(1, _BLOCK_ELEMENTS // num_all)
    _check_memory(
        device,
        {
            "result": value_bytes * num_query * num_gallery,
            "row blocks": 4 * value_bytes * block * num_all,
            "neighbour lists": 10 * num_all * (k1 + 1 + k2),
            "encoding V": (16 + 2 * value_bytes) * num_all * width,
            "join": (40 + 2 * value_bytes) * _JOIN_PAIRS,
        },
    )

    # Pass 1: each row's nearest neighbours under d^2 / (row maximum of d^2), the published
    # normalisation; topk of a row in the order of a full sort.
    num_neighbours = max(k1 + 1, k2)
    neighbours = torch.empty(num_all, num_neighbours, dtype=torch.int64, device=device)
    row_max = torch.empty(num_all, dtype=dtype, device=device)
    for start in range(0, num_all, block):
        stop = min(start + block, num_all)
        squared = rows(start, stop).to(dtype).square_()
        if not bool(torch.isfinite(squared).all()):
            raise ValueError(
                f"distances must be finite (rows {start}..{stop - 1} of the joint matrix are not)"
            )
        row_max[start:stop] = squared.amax(dim=1)
        if not bool((row_max[start:stop] > 0).all()):
            raise ValueError("every image needs a non-zero distance to some other image")
        squared /= row_max[start:stop, None]
        neighbours[start:stop] = squared.topk(num_neighbours, dim=1, largest=False).indices

    chunk = max(1, _BLOCK_ELEMENTS // ((k1 + 1) ** 2 * (half + 1)))
    reciprocal = _reciprocal_mask(neighbours[:, : k1 + 1], chunk)
    half_neighbours = neighbours[:, : half + 1]
    half_reciprocal = _reciprocal_mask(half_neighbours, chunk)

    # Pass 2: the encoding V (paper Eq. 10) over each row's expansion set, and the normalised
    # query-gallery distances, which the result starts from.
    out = torch.empty(num_query, num_gallery, dtype=dtype, device=device)
    entries_rows, entries_cols, entries_values = [], [], []
    for start in range(0, num_all, block):
        stop = min(start + block, num_all)
        distances = rows(start, stop).to(dtype).square_().div_(row_max[start:stop, None])
        if start < num_query:
            query_stop = min(stop, num_query)
            out[start:query_stop] = distances[: query_stop - start, num_query:] * lambda_value
        for sub in range(start, stop, chunk):
            sub_stop = min(sub + chunk, stop)
            index = torch.arange(sub, sub_stop, device=device)
            cols, valid = _expansion_sets(
                index, neighbours[:, : k1 + 1], reciprocal, half_neighbours, half_reciprocal
            )
            weight = torch.exp(-distances[sub - start : sub_stop - start].gather(1, cols))
            weight = weight * valid
            weight /= weight.sum(dim=1, keepdim=True)
            entries_rows.append(index[:, None].expand_as(cols)[valid])
            entries_cols.append(cols[valid])
            entries_values.append(weight[valid])
    encoding = torch.sparse_coo_tensor(
        torch.stack([torch.cat(entries_rows), torch.cat(entries_cols)]),
        torch.cat(entries_values),
        (num_all, num_all),
        check_invariants=False,
    ).coalesce()
    del entries_rows, entries_cols, entries_values

    if k2 != 1:
        # Local query expansion (paper Eq. 12): V[i] <- mean of V over i's k2 nearest rows.
        entry_bytes = 16 + 2 * value_bytes
        _check_memory(device, {"expanded encoding V": entry_bytes * k2 * encoding._nnz()})
        expand = torch.sparse_coo_tensor(
            torch.stack(
                [
                    torch.arange(num_all, device=device).repeat_interleave(k2),
                    neighbours[:, :k2].reshape(-1),
                ]
            ),
            torch.full((num_all * k2,), 1.0 / k2, dtype=dtype, device=device),
            (num_all, num_all),
            check_invariants=False,
        )
        with warnings.catch_warnings():  # torch calls its sparse-sparse product "beta"
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
            encoding = torch.sparse.mm(expand, encoding).coalesce()
    _jaccard_into(out, encoding, num_query, lambda_value)
    return out


def _as_tensor(name: str, value: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name} must hold floating-point distances, got dtype {value.dtype}")
    return value.detach()


def re_ranking(
    q_g_dist: np.ndarray | torch.Tensor,
    q_q_dist: np.ndarray | torch.Tensor,
    g_g_dist: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray | torch.Tensor:
    """k-reciprocal re-ranking of a query-gallery distance matrix (Zhong et al., CVPR 2017).

    The call contract of the published code, as torchreid's and fast-reid's ``re_ranking``:
    distances in (smaller is closer; torchreid passes its squared Euclidean or cosine distances),
    and the re-ranked (Q, G) distances out, ``(1 - lambda) * Jaccard + lambda * d^2 / max``
    where the original distances are squared and divided by their row maximum over all N = Q + G
    images. ``q_q_dist`` and ``g_g_dist`` are taken to be symmetric, as distances are. Runs in
    torch on the inputs' device (CPU or GPU) with memory beyond the inputs of about the (Q, G)
    result plus O(N * k1); raises ``MemoryError`` saying what it would need when that does not
    fit. Computed in float64 when any matrix is float64, else in float32. Ties among distances
    are broken as ``torch.topk`` breaks them (the published code's ``np.argsort`` is not stable
    either).

    Args:
        q_g_dist: (Q, G) query-gallery distances.
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1: size of the k-reciprocal neighbourhood (paper: 20).
        k2: neighbours averaged in the local query expansion (paper: 6; 1 turns it off).
        lambda_value: weight of the original distance (paper: 0.3).

    Returns:
        (Q, G) re-ranked distances, float64 or float32 as computed: a numpy array when
        ``q_g_dist`` is one, else a tensor on its device.

    Example:
        >>> import numpy as np
        >>> points = np.random.default_rng(0).random((30, 4))
        >>> d = ((points[:, None] - points[None]) ** 2).sum(-1)
        >>> re_ranking(d[:5, 5:], d[:5, :5], d[5:, 5:], k1=4, k2=2).shape
        (5, 25)
    """
    as_numpy = isinstance(q_g_dist, np.ndarray)
    q_g = _as_tensor("q_g_dist", q_g_dist)
    q_q = _as_tensor("q_q_dist", q_q_dist)
    g_g = _as_tensor("g_g_dist", g_g_dist)
    num_query, num_gallery = q_g.shape
    for name, matrix, size in (("q_q_dist", q_q, num_query), ("g_g_dist", g_g, num_gallery)):
        if matrix.shape != (size, size):
            raise ValueError(
                f"{name} must be ({size}, {size}) to match q_g_dist {tuple(q_g.shape)}, got "
                f"{tuple(matrix.shape)}"
            )
    if not q_g.device == q_q.device == g_g.device:
        raise ValueError(
            f"the distance matrices must be on one device, got {q_g.device}, {q_q.device} and "
            f"{g_g.device}"
        )

    dtype = evaluation_dtype(q_g, q_q, g_g)

    def rows(start: int, stop: int) -> torch.Tensor:
        parts = []
        if start < num_query:
            end = min(stop, num_query)
            parts.append(torch.cat([q_q[start:end].to(dtype), q_g[start:end].to(dtype)], dim=1))
        if stop > num_query:
            begin = max(start, num_query) - num_query
            end = stop - num_query
            g_rows = g_g[begin:end].to(dtype)
            parts.append(torch.cat([q_g[:, begin:end].t().to(dtype), g_rows], dim=1))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    out = k_reciprocal_rerank(
        rows, num_query, num_query + num_gallery, k1, k2, lambda_value, q_g.device, dtype
    )
    return out.cpu().numpy() if as_numpy else out


def re_ranking_features(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    metric: Metric = "euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> torch.Tensor:
    """:func:`re_ranking` of the distances between features, never storing q_q or g_g.

    Equal to ``re_ranking(pairwise_distance(q, g), pairwise_distance(q, q),
    pairwise_distance(g, g))``, but each block of rows of the joint matrix is computed when
    needed (twice), so MSMT17's 27 GB gallery-gallery matrix never exists.

    Args:
        query_feats: (Q, D) features.
        gallery_feats: (G, D) features, on the same device.
        metric: see :func:`pairwise_distance`.
        k1, k2, lambda_value: see :func:`re_ranking`.

    Returns:
        (Q, G) re-ranked distances on the features' device, float64 when either input is
        float64, else float32.
    """
    check_feature_pair(query_feats, gallery_feats)
    dtype = evaluation_dtype(query_feats, gallery_feats)
    all_feats = torch.cat([query_feats.to(dtype), gallery_feats.to(dtype)])

    def rows(start: int, stop: int) -> torch.Tensor:
        return pairwise_distance(all_feats[start:stop], all_feats, metric)

    return k_reciprocal_rerank(
        rows,
        query_feats.shape[0],
        all_feats.shape[0],
        k1,
        k2,
        lambda_value,
        all_feats.device,
        dtype,
    )
