"""CMC, mAP and mINP from a query-gallery distance matrix (Market-1501 protocol), vectorised.

Only the ranks of a query's true matches matter: CMC needs the first, AP all of them, INP the
last. Instead of sorting every gallery row (what the reference loop does, and the cost that
dominates: about two minutes for MSMT17 on two cores), the rank of each match is counted. Each
row's distances are put into buckets by a monotone map over the range of that row's match
distances; one histogram then counts the gallery items in lower buckets, and only the few items
sharing a bucket with a match are compared exactly, by (distance, gallery index). That tie
break is what a stable sort of the row gives, so the result equals the sort-based protocol
exactly, ties included.

The passes over the distance matrix run in torch on its device; the per-match bookkeeping
(about a hundred values per query) runs in numpy, whose small-array operations carry far less
overhead than torch's multi-threaded ones on a busy CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence[int]

# Distances per chunk; the reused workspace takes 9 bytes per float32 distance.
_CHUNK_ELEMENTS = 1 << 24


def _id_array(name: str, values: ArrayLike) -> np.ndarray:
    """A 1-D int64 numpy array from an integer array, tensor or sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "iu" and array.size > 0:  # an empty list is float64
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array.astype(np.int64, copy=False)


def _distmat_tensor(distmat: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A (Q, G) distance matrix as a tensor (a numpy array is shared, not copied)."""
    if isinstance(distmat, np.ndarray):
        distmat = torch.from_numpy(np.ascontiguousarray(distmat))
    elif not isinstance(distmat, torch.Tensor):
        raise TypeError(
            f"distmat must be a numpy array or torch.Tensor, got {type(distmat).__name__}"
        )
    if distmat.dim() != 2:
        raise ValueError(f"distmat must be 2-D (Q, G), got shape {tuple(distmat.shape)}")
    return distmat


def _gather(tensor: torch.Tensor, index: np.ndarray) -> np.ndarray:
    """``tensor.view(-1)[index]`` as a numpy array, without copying a CPU tensor first."""
    flat = tensor.view(-1)
    if flat.device.type == "cpu":
        return flat.numpy()[index]
    return flat[torch.from_numpy(index).to(flat.device)].cpu().numpy()


def _flat_nonzero(mask: torch.Tensor) -> np.ndarray:
    """Indices of the True entries of a 1-D bool tensor."""
    if mask.device.type == "cpu":
        # numpy's is several times faster than torch's on CPU for large, sparse masks.
        return np.flatnonzero(mask.numpy())
    return mask.nonzero().view(-1).cpu().numpy()


class RankAccumulator:
    """Collects CMC, AP and INP over blocks of queries ranked against one gallery.

    Args:
        g_pids: (G,) gallery identity labels.
        g_camids: (G,) gallery camera IDs.
        max_rank: length of the CMC curve.
        cross_camera: ignore gallery items sharing the query's identity and camera.
        device: where the passes over the distances run: that of the distances given to
            :meth:`add`.
        chunk_size: queries processed at once (default: about 16M distances at once).
        per_query: also keep each valid query's AP, INP and first-match rank (see
            :func:`rank_metrics`).
    """

    def __init__(
        self,
        g_pids: ArrayLike,
        g_camids: ArrayLike,
        max_rank: int = 50,
        cross_camera: bool = True,
        device: torch.device | str = "cpu",
        chunk_size: int | None = None,
        per_query: bool = False,
    ) -> None:
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        # Resolved through a tensor so "cuda" compares equal to the tensors' "cuda:0".
        self.device = torch.empty(0, device=device).device
        self.g_pids = _id_array("g_pids", g_pids)
        self.g_camids = _id_array("g_camids", g_camids)
        if self.g_pids.size == 0:
            raise ValueError("the gallery is empty (g_pids has no entries): nothing to rank")
        if self.g_pids.shape != self.g_camids.shape:
            raise ValueError(
                f"g_pids and g_camids must have the same length, got {self.g_pids.size} "
                f"and {self.g_camids.size}"
            )
        self.max_rank = int(max_rank)
        self.cross_camera = bool(cross_camera)
        num_gallery = self.g_pids.size
        # About 20 gallery items per bucket; more buckets would make the histogram outgrow
        # the CPU caches, which costs more than the extra exact comparisons save.
        self.num_buckets = int(min(max(num_gallery // 20, 16), 4096))
        self.bins_per_row = self.num_buckets + 3
        # Bucket keys are int32: row * bins_per_row + bucket must stay below 2**31.
        most_rows = (2**31 - 1) // self.bins_per_row
        default_rows = max(1, _CHUNK_ELEMENTS // max(num_gallery, 1))
        self.chunk_size = min(default_rows if chunk_size is None else int(chunk_size), most_rows)
        # Gallery indices grouped by identity (stable, so increasing inside a group): a query's
        # same-identity items are then one slice, found without scanning the gallery.
        self._gallery_by_pid = np.argsort(self.g_pids, kind="stable")
        self._sorted_g_pids = self.g_pids[self._gallery_by_pid]
        self._buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.first_match_counts = np.zeros(self.max_rank, dtype=np.int64)
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0
        self.num_queries = 0
        self.per_query = bool(per_query)
        self._per_query: dict[str, list[np.ndarray]] = {
            "query_index": [],
            "all_AP": [],
            "all_INP": [],
            "first_match_rank": [],
        }

    def add(self, distances: torch.Tensor, q_pids: ArrayLike, q_camids: ArrayLike) -> None:
        """Add a block of queries.

        Args:
            distances: (Q, G) distances, smaller is closer, any real dtype; NaN is refused,
                +-inf is allowed. On ``self.device``.
            q_pids: (Q,) query identity labels.
            q_camids: (Q,) query camera IDs.
        """
        q_pids = _id_array("q_pids", q_pids)
        q_camids = _id_array("q_camids", q_camids)
        if not isinstance(distances, torch.Tensor):
            raise TypeError(f"distances must be a torch.Tensor, got {type(distances).__name__}")
        if distances.shape != (q_pids.size, self.g_pids.size):
            raise ValueError(
                f"distances must have shape (len(q_pids), len(g_pids)) = "
                f"({q_pids.size}, {self.g_pids.size}), got {tuple(distances.shape)}"
            )
        if q_camids.shape != q_pids.shape:
            raise ValueError(
                f"q_camids must have the length of q_pids ({q_pids.size}), got {q_camids.size}"
            )
        if distances.dtype.is_complex or distances.dtype == torch.bool:
            raise TypeError(f"distances must hold real numbers, got dtype {distances.dtype}")
        if distances.device != self.device:
            raise ValueError(
                f"distances must be on {self.device} (the accumulator's device), "
                f"got {distances.device}"
            )
        for start in range(0, q_pids.size, self.chunk_size):
            stop = start + self.chunk_size
            self._add_chunk(distances[start:stop], q_pids[start:stop], q_camids[start:stop])

    def result(self) -> dict[str, np.ndarray | float | int]:
        """``{"cmc": (max_rank,) float64, "mAP": float, "mINP": float, "num_valid_queries"}``,
        plus the per-query arrays when ``per_query`` (see :func:`rank_metrics`).

        Raises:
            ValueError: when no query was added, or none had a valid match.
        """
        if self.num_queries == 0:
            raise ValueError("no query was added (the query set is empty): nothing to score")
        if self.num_valid == 0:
            hint = (
                " (cross_camera=True ignores gallery items of the query's identity and camera; "
                "use cross_camera=False for single-camera data such as CUHK-SYSU)"
                if self.cross_camera
                else ""
            )
            raise ValueError("no query has a valid match in the gallery" + hint)
        result = {
            "cmc": self.first_match_counts.cumsum() / self.num_valid,
            "mAP": self.ap_sum / self.num_valid,
            "mINP": self.inp_sum / self.num_valid,
            "num_valid_queries": self.num_valid,
        }
        if self.per_query:
            result |= {key: np.concatenate(parts) for key, parts in self._per_query.items()}
        return result

    def _add_chunk(self, distances: torch.Tensor, q_pids: np.ndarray, q_camids: np.ndarray) -> None:
        if distances.dtype in (torch.float16, torch.bfloat16):
            distances = distances.float()
        elif not distances.dtype.is_floating_point:
            distances = distances.double()
        distances = distances.detach().contiguous()
        # A sum is NaN whenever an element is, and is far cheaper than isnan over the block;
        # only then (or for +inf + -inf) look closer.
        if bool(torch.isnan(distances.sum())) and bool(torch.isnan(distances).any()):
            raise ValueError("distances must not contain NaN")

        rows, ranks = self._match_ranks(distances, q_pids, q_camids)
        row_offset = self.num_queries
        self.num_queries += q_pids.size
        if rows.size == 0:
            return
        # rows and ranks come ordered by (row, rank).
        valid_rows = np.unique(rows)
        starts = np.searchsorted(rows, valid_rows)
        stops = np.searchsorted(rows, valid_rows, side="right")
        num_matches = stops - starts
        ordinal = np.arange(rows.size) - np.repeat(starts, num_matches)
        precision_sums = np.add.reduceat((ordinal + 1) / (ranks + 1), starts)
        first_rank = ranks[starts]
        self.first_match_counts += np.bincount(
            first_rank[first_rank < self.max_rank], minlength=self.max_rank
        )
        average_precision = precision_sums / num_matches
        inverse_negative_penalty = num_matches / (ranks[stops - 1] + 1)
        self.ap_sum += float(average_precision.sum())
        self.inp_sum += float(inverse_negative_penalty.sum())
        self.num_valid += valid_rows.size
        if self.per_query:
            self._per_query["query_index"].append(valid_rows + row_offset)
            self._per_query["all_AP"].append(average_precision)
            self._per_query["all_INP"].append(inverse_negative_penalty)
            self._per_query["first_match_rank"].append(first_rank + 1)

    def _same_identity_pairs(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, gallery index) of every same-identity pair, ordered by row then index."""
        first = np.searchsorted(self._sorted_g_pids, q_pids)
        counts = np.searchsorted(self._sorted_g_pids, q_pids, side="right") - first
        rows = np.repeat(np.arange(q_pids.size), counts)
        shift = np.repeat(first - (counts.cumsum() - counts), counts)
        return rows, self._gallery_by_pid[np.arange(rows.size) + shift]

    def _workspace(
        self, num_rows: int, num_gallery: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float, int32 and bool buffers of ``num_rows * num_gallery`` elements.

        Reused across chunks: fresh large allocations cost a page fault per 4 KiB on first
        touch, as much as the arithmetic itself.
        """
        size = num_rows * num_gallery
        buffers = self._buffers
        if buffers is None or buffers[0].dtype != dtype or buffers[0].numel() < size:
            capacity = max(size, self.chunk_size * num_gallery)
            buffers = self._buffers = (
                torch.empty(capacity, dtype=dtype, device=self.device),
                torch.empty(capacity, dtype=torch.int32, device=self.device),
                torch.empty(capacity, dtype=torch.bool, device=self.device),
            )
        return tuple(buffer[:size] for buffer in buffers)

    def _bucket_map(
        self, distances: torch.Tensor, match_rows: np.ndarray, match_distances: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row ``scale`` and ``offset`` of the bucket map (see :meth:`_match_ranks`)."""
        num_rows = distances.shape[0]
        starts = np.flatnonzero(np.diff(match_rows, prepend=-1))
        low = np.full(num_rows, np.inf)
        high = np.full(num_rows, -np.inf)
        low[match_rows[starts]] = np.minimum.reduceat(match_distances, starts)
        high[match_rows[starts]] = np.maximum.reduceat(match_distances, starts)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            width = high - low
            degenerate = np.flatnonzero(width == 0)
            if degenerate.size > 0:
                # A lone match (or tied matches) gives no width: spread the row's whole range
                # instead, so the match's bucket holds about G / B items, not half the row.
                row_low, row_high = torch.aminmax(
                    distances[torch.from_numpy(degenerate).to(distances.device)], dim=1
                )
                width[degenerate] = (row_high - row_low).double().cpu().numpy()
            # Checked in the distances' dtype: a float64-finite scale can overflow float32.
            dtype = np.float64 if distances.dtype == torch.float64 else np.float32
            scale = (self.num_buckets / width).astype(dtype)
            offset = (1.5 - low * scale).astype(dtype)
            usable = np.isfinite(scale) & (scale > 0) & np.isfinite(offset)
            fallback_offset = (1.5 - np.where(np.isfinite(low), low, 0.0)).astype(dtype)
            scale = np.where(usable, scale, 1).astype(dtype)
            offset = np.where(usable, offset, fallback_offset)
        return scale, offset

    def _match_ranks(
        self, distances: torch.Tensor, q_pids: np.ndarray, q_camids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row and 0-based rank among the row's kept gallery items of every true match.

        A gallery item precedes a match when its (distance, gallery index) is smaller. Output
        ordered by (row, rank).
        """
        num_rows, num_gallery = distances.shape
        device = distances.device
        same_rows, same_cols = self._same_identity_pairs(q_pids)
        if self.cross_camera:
            junk = q_camids[same_rows] == self.g_camids[same_cols]
            junk_flat = same_rows[junk] * num_gallery + same_cols[junk]
            match_rows = same_rows[~junk]
            match_flat = match_rows * num_gallery + same_cols[~junk]
        else:
            junk_flat = same_rows[:0]
            match_rows, match_flat = same_rows, same_rows * num_gallery + same_cols
        if match_rows.size == 0:
            return match_rows, match_rows

        # Bucket b(d) = trunc(clamp(d * scale + offset, 0, B + 2)) is monotone in d, and free
        # of NaN, for any finite positive scale and finite offset: exactness never depends on
        # them, only speed. They put a row's matches at 1.5..B+1.5 (the half keeps rounding in
        # d * scale from pushing the closest match into bucket 0 with everything closer), so
        # matches land in buckets 1..B+1, every closer item in 0, the far ones in B + 2.
        scale, offset = self._bucket_map(distances, match_rows, _gather(distances, match_flat))
        buckets, keys, candidate = self._workspace(num_rows, num_gallery, distances.dtype)
        torch.addcmul(
            torch.from_numpy(offset).to(device)[:, None],
            distances,
            torch.from_numpy(scale).to(device)[:, None],
            out=buckets.view_as(distances),
        )
        buckets.clamp_(0, self.num_buckets + 2)
        keys.copy_(buckets)
        row_bins = torch.arange(num_rows, device=device, dtype=torch.int32) * self.bins_per_row
        keys.view_as(distances).add_(row_bins[:, None])

        # Kept items in lower buckets of the row: a histogram of all items less the ignored
        # ones, then an exclusive running count over the whole chunk.
        counts = torch.bincount(keys, minlength=num_rows * self.bins_per_row)
        junk_keys = torch.from_numpy(_gather(keys, junk_flat)).to(device, torch.int64)
        counts.index_add_(0, junk_keys, torch.full_like(junk_keys, -1))
        items_before = counts.cumsum(0) - counts

        # Exact order inside the buckets that hold a match.
        holds_match = torch.zeros(num_rows * self.bins_per_row, dtype=torch.bool, device=device)
        holds_match[torch.from_numpy(_gather(keys, match_flat)).to(device, torch.int64)] = True
        torch.index_select(holds_match, 0, keys, out=candidate)
        cand_flat = _flat_nonzero(candidate)
        cand_rows = cand_flat // num_gallery
        cand_cols = cand_flat - cand_rows * num_gallery
        is_match = q_pids[cand_rows] == self.g_pids[cand_cols]
        if self.cross_camera:
            kept = ~(is_match & (q_camids[cand_rows] == self.g_camids[cand_cols]))
            cand_flat, cand_rows, is_match = cand_flat[kept], cand_rows[kept], is_match[kept]
        cand_keys = _gather(keys, cand_flat).astype(np.int64)
        # Candidates come in (row, index) order and lexsort is stable: sorting by bucket key,
        # then distance, leaves equal distances in gallery-index order.
        order = np.lexsort((_gather(distances, cand_flat), cand_keys))
        cand_keys, cand_rows, is_match = cand_keys[order], cand_rows[order], is_match[order]
        within_bucket = np.arange(cand_keys.size) - np.searchsorted(cand_keys, cand_keys)
        match_keys, match_rows = cand_keys[is_match], cand_rows[is_match]
        before_bucket = _gather(items_before, match_keys) - _gather(
            items_before, match_rows * self.bins_per_row
        )
        return match_rows, before_bucket + within_bucket[is_match]


def rank_metrics(
    distmat: np.ndarray | torch.Tensor,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    cross_camera: bool = True,
    chunk_size: int | None = None,
    per_query: bool = False,
) -> dict[str, np.ndarray | float | int]:
    """CMC, mAP and mINP of a retrieval, Market-1501 protocol.

    For each query the gallery is ranked by increasing distance, equal distances by gallery
    index (what a stable sort gives, so results are reproducible). With ``cross_camera`` the
    gallery items of the query's identity *and* camera are ignored (Market-1501, DukeMTMC,
    CUHK03, MSMT17); turn it off for single-camera data (CUHK-SYSU). Queries left without a
    true match are skipped. AP is the mean precision at each true match; INP (Ye et al.) is
    ``num_matches / (rank of the last match)``; CMC@k the fraction of queries with a match in
    the top k.

    Queries are processed in chunks of rows, with time linear in the number of distances (no
    per-row sort); the matrix itself may live on the CPU (numpy or torch) or on a GPU.

    Args:
        distmat: (Q, G) distances, smaller is closer; any real dtype, NaN refused.
        q_pids: (Q,) query identity labels.
        g_pids: (G,) gallery identity labels.
        q_camids: (Q,) query camera IDs.
        g_camids: (G,) gallery camera IDs.
        max_rank: length of the CMC curve.
        cross_camera: ignore same-identity gallery items from the query's camera.
        chunk_size: queries per chunk (default: about 16M distances per chunk).
        per_query: also return, for each valid query in query order (V of them):
            ``query_index`` (V,) int64, its row in ``distmat``; ``all_AP`` and ``all_INP``
            (V,) float64 (fast-reid's names); ``first_match_rank`` (V,) int64, the 1-based rank
            of its first true match among the kept gallery items (1 = top).

    Returns:
        ``{"cmc": (max_rank,) float64 array, "mAP": float, "mINP": float,
        "num_valid_queries": int}``; fractions in [0, 1]; plus the ``per_query`` arrays.

    Raises:
        ValueError: on mismatched lengths, NaN distances, or when no query has a valid match.

    Examples:
        >>> import numpy as np
        >>> result = rank_metrics(
        ...     np.array([[0.1, 0.5, 0.3]]), q_pids=[1], g_pids=[1, 1, 2],
        ...     q_camids=[0], g_camids=[1, 2, 1],
        ... )
        >>> result["cmc"][:3].tolist(), result["mAP"]
        ([1.0, 1.0, 1.0], 0.8333333333333333)
    """
    distmat = _distmat_tensor(distmat)
    accumulator = RankAccumulator(
        g_pids, g_camids, max_rank, cross_camera, distmat.device, chunk_size, per_query
    )
    accumulator.add(distmat, q_pids, q_camids)
    return accumulator.result()
