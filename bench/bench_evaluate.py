"""Time dcsd.evaluate.rank_metrics at MSMT17 size (11,659 queries x 82,161 gallery).

Random float32 distances with MSMT17's test statistics (3,060 identities, 15 cameras), so the
work is that of the real protocol; the metrics themselves are those of chance. Optionally also
times the per-query stable-argsort loop (the textbook implementation) on a few queries,
extrapolated, and evaluate_retrieval from random features (distances computed block by block).

    python bench/bench_evaluate.py                       # MSMT17 size
    python bench/bench_evaluate.py --num-query 3368 --num-gallery 15913 --num-ids 751 \
        --num-cams 6                                     # Market-1501 size
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dcsd.evaluate import FeatureSet, evaluate_retrieval, rank_metrics


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-query", type=int, default=11_659)
    parser.add_argument("--num-gallery", type=int, default=82_161)
    parser.add_argument("--num-ids", type=int, default=3_060, help="test identities")
    parser.add_argument("--num-cams", type=int, default=15)
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per chunk")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (best is shown)")
    parser.add_argument(
        "--loop-queries",
        type=int,
        default=200,
        help="queries for the per-query argsort loop, extrapolated to all (0: skip)",
    )
    parser.add_argument(
        "--feature-dim",
        type=int,
        default=0,
        help="also time evaluate_retrieval from random features of this size (0: skip)",
    )
    parser.add_argument("--device", default="cpu", help="device for rank_metrics' distances")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def loop_rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Per-query stable argsort, as the reference implementations do it."""
    aps = []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same_pid = g_pids[order] == q_pids[i]
        matches = same_pid[~(same_pid & (g_camids[order] == q_camids[i]))]
        hits = np.flatnonzero(matches)
        if hits.size:
            aps.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))
    return aps


def best_time(function, repeat: int) -> tuple[tuple[float, float], object]:
    """Best (wall, process CPU) seconds over ``repeat`` runs, and the last result.

    CPU time shows how much of a slow wall time is contention with other processes.
    """
    best, result = (float("inf"), float("inf")), None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best, result


def msmt_like_ids(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Identity and camera labels; every identity has gallery images, queries reuse them."""
    extra = rng.integers(0, args.num_ids, args.num_gallery - args.num_ids)
    return {
        "q_pids": rng.integers(0, args.num_ids, args.num_query),
        "g_pids": np.concatenate([np.arange(args.num_ids), extra]),
        "q_camids": rng.integers(0, args.num_cams, args.num_query),
        "g_camids": rng.integers(0, args.num_cams, args.num_gallery),
    }


def time_distmat(args, ids, rng) -> list[tuple[str, tuple[float, float], float]]:
    distmat = rng.random((args.num_query, args.num_gallery), dtype=np.float32)
    distances = torch.from_numpy(distmat).to(args.device)
    seconds, result = best_time(
        lambda: rank_metrics(distances, **ids, chunk_size=args.chunk_size), args.repeat
    )
    rows = [("rank_metrics (distmat given)", seconds, result["mAP"])]
    if args.loop_queries > 0:
        count = min(args.loop_queries, args.num_query)
        seconds, aps = best_time(
            lambda: loop_rank_metrics(
                distmat[:count],
                ids["q_pids"][:count],
                ids["g_pids"],
                ids["q_camids"][:count],
                ids["g_camids"],
            ),
            1,
        )
        what = f"per-query argsort loop ({count} queries, extrapolated)"
        scale = args.num_query / count
        rows.append((what, (seconds[0] * scale, seconds[1] * scale), float(np.mean(aps))))
    return rows


def time_features(args, ids) -> list[tuple[str, tuple[float, float], float]]:
    generator = torch.Generator().manual_seed(args.seed)

    def features(prefix: str) -> FeatureSet:
        pids, camids = ids[f"{prefix}_pids"], ids[f"{prefix}_camids"]
        embeddings = torch.randn(pids.size, args.feature_dim, generator=generator)
        return FeatureSet(embeddings, pids, camids, [""] * pids.size)

    query, gallery = features("q"), features("g")
    seconds, result = best_time(
        lambda: evaluate_retrieval(query, gallery, chunk_size=args.chunk_size, device=args.device),
        args.repeat,
    )
    what = f"evaluate_retrieval (D={args.feature_dim}, distances included)"
    return [(what, seconds, result["mAP"])]


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    ids = msmt_like_ids(args, rng)
    rows = time_distmat(args, ids, rng)
    if args.feature_dim > 0:
        rows += time_features(args, ids)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print("| what | queries x gallery | wall s | CPU s | mAP (chance) |")
    print("|---|---|---:|---:|---:|")
    size = f"{args.num_query:,} x {args.num_gallery:,}"
    for what, (wall, cpu), m_ap in rows:
        print(f"| {what} | {size} | {wall:.1f} | {cpu:.1f} | {100 * m_ap:.3f}% |")


if __name__ == "__main__":
    main()
