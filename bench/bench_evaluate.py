"""CMC / mAP at MSMT17 size (11,659 queries x 82,161 gallery): dcsd against what the peers ship.

Methods, each timed in a fresh process on the same random float32 distances (MSMT17's test
statistics: 3,060 identities, 15 cameras; the metrics are those of chance), with the process's
peak resident memory (the 3.8 GB distance matrix included) and CPU time (on a shared machine
wall time depends on the neighbours; CPU time much less):

- ``dcsd``: :func:`dcsd.evaluate.rank_metrics` (histogram counting, no sort).
- ``torch_sort``: a chunked ``torch.sort(stable=True)`` of each block of rows, then the protocol
  with cumulative sums: the simple torch version.
- ``torchreid_py``: torchreid's ``eval_market1501`` (``evaluate_py``: one ``np.argsort`` of the
  whole matrix, then a per-query loop), loaded from a deep-person-reid checkout.
- ``torchreid_cy``: torchreid's Cython ``evaluate_cy`` (fast-reid's is the same algorithm), if
  it was built in that checkout (``cd torchreid/metrics/rank_cylib && python setup.py
  build_ext --inplace``).

torchreid's two hold the whole argsort (int64) and a match matrix at once, about 20 GB at MSMT17
size; when that would not fit in ``--memory-limit`` they run on the first queries only and the
time is scaled to all queries (both parts of their work are linear in the number of queries),
and the table says so. ``torchreid_py`` also loops in Python over every gallery item of every
query, so it runs on ``--py-queries`` queries (scaled the same way).

    python bench/bench_evaluate.py --torchreid /path/to/deep-person-reid
    python bench/bench_evaluate.py --num-query 3368 --num-gallery 15913 --num-ids 751 \
        --num-cams 6 --torchreid /path/to/deep-person-reid     # Market-1501 size
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ("dcsd", "torch_sort", "torchreid_py", "torchreid_cy")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-query", type=int, default=11_659)
    parser.add_argument("--num-gallery", type=int, default=82_161)
    parser.add_argument("--num-ids", type=int, default=3_060, help="test identities")
    parser.add_argument("--num-cams", type=int, default=15)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--torchreid", type=Path, help="a deep-person-reid checkout")
    parser.add_argument(
        "--memory-limit",
        type=float,
        default=12.0,
        help="GB a method may take; torchreid's run on fewer queries beyond it",
    )
    parser.add_argument(
        "--py-queries",
        type=int,
        default=300,
        help="queries for torchreid_py, scaled to all (its per-element Python loop is slow)",
    )
    parser.add_argument(
        "--max-queries",
        type=int,
        help="run the other methods (not dcsd) on at most this many queries, scaled to all",
    )
    parser.add_argument("--device", default="cpu", help="device of the torch methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", choices=METHODS, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--queries", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def make_inputs(args: argparse.Namespace, num_query: int) -> dict[str, np.ndarray]:
    """Labels for all queries (every identity has gallery images), distances for the first
    ``num_query``; the same for every method given the seed."""
    rng = np.random.default_rng(args.seed)
    extra = rng.integers(0, args.num_ids, args.num_gallery - args.num_ids)
    inputs = {
        "q_pids": rng.integers(0, args.num_ids, args.num_query)[:num_query],
        "g_pids": np.concatenate([np.arange(args.num_ids), extra]),
        "q_camids": rng.integers(0, args.num_cams, args.num_query)[:num_query],
        "g_camids": rng.integers(0, args.num_cams, args.num_gallery),
    }
    distmat = np.empty((num_query, args.num_gallery), dtype=np.float32)
    for start in range(0, num_query, 1024):  # row blocks: no float64 temporary
        block = np.random.default_rng([args.seed, start])
        distmat[start : start + 1024] = block.random(distmat[start : start + 1024].shape, "f4")
    return {"distmat": distmat, **inputs}


def torch_sort_metrics(distmat, q_pids, g_pids, q_camids, g_camids, device, max_rank=50):
    """The protocol on a stable sort of each block of rows, in torch (``distmat``: a tensor on
    ``device``)."""
    g_pids_t = torch.from_numpy(g_pids).to(device)
    g_camids_t = torch.from_numpy(g_camids).to(device)
    cmc_counts = torch.zeros(max_rank, dtype=torch.float64, device=device)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    chunk = max(1, (1 << 24) // distmat.shape[1])
    for start in range(0, distmat.shape[0], chunk):
        rows = distmat[start : start + chunk]
        q_pid = torch.from_numpy(q_pids[start : start + chunk]).to(device)[:, None]
        q_cam = torch.from_numpy(q_camids[start : start + chunk]).to(device)[:, None]
        order = rows.sort(dim=1, stable=True).indices
        same = g_pids_t[order] == q_pid
        keep = ~(same & (g_camids_t[order] == q_cam))
        matches = same & keep
        hits = matches.cumsum(1)  # matches at or before each position
        kept_rank = keep.cumsum(1)  # 1-based rank among the kept items
        num_rel = hits[:, -1]
        valid = num_rel > 0
        precision = torch.where(matches, hits / kept_rank, 0.0).sum(1)
        first = torch.where(matches, kept_rank, kept_rank.shape[1] + 1).amin(1)
        last = torch.where(matches, kept_rank, 0).amax(1)
        ap_sum += float((precision[valid] / num_rel[valid]).sum())
        inp_sum += float((num_rel[valid] / last[valid]).sum())
        cmc_counts += torch.bincount(
            (first[valid] - 1).clamp(max=max_rank), minlength=max_rank + 1
        )[:max_rank].double()
        num_valid += int(valid.sum())
    return float(ap_sum / num_valid), (cmc_counts.cumsum(0) / num_valid).cpu().numpy()


def load_torchreid(root: Path, cython: bool):
    """torchreid's ``eval_market1501`` or ``evaluate_cy``, straight from the checkout's files."""
    metrics = root / "torchreid" / "metrics"
    if cython:
        built = sorted((metrics / "rank_cylib").glob("rank_cy*.so"))
        if not built:
            raise FileNotFoundError(f"no built rank_cy*.so in {metrics / 'rank_cylib'}")
        spec = importlib.util.spec_from_file_location("rank_cy", built[0])
    else:
        spec = importlib.util.spec_from_file_location("torchreid_rank", metrics / "rank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_memory_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def run_child(args: argparse.Namespace) -> None:
    """Time one method in this (fresh) process and print a JSON line."""
    inputs = make_inputs(args, args.queries)
    labels = [inputs[k] for k in ("q_pids", "g_pids", "q_camids", "g_camids")]
    distmat = inputs["distmat"]
    # Imports and loading happen before the clock starts.
    if args.run == "dcsd":
        from dcsd.evaluate import rank_metrics

        distances = torch.from_numpy(distmat).to(args.device)

        def evaluate():
            result = rank_metrics(distances, *labels)
            return result["mAP"], result["cmc"]
    elif args.run == "torch_sort":
        distances = torch.from_numpy(distmat).to(args.device)  # like dcsd: on the device first

        def evaluate():
            return torch_sort_metrics(distances, *labels, device=args.device)
    else:
        cython = args.run == "torchreid_cy"
        peer = load_torchreid(args.torchreid, cython)
        function = peer.evaluate_cy if cython else peer.eval_market1501

        def evaluate():
            cmc, m_ap = function(distmat, *labels, 50)
            return m_ap, cmc

    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    m_ap, cmc = evaluate()
    if on_gpu:
        torch.cuda.synchronize()
    cpu_seconds = time.process_time() - cpu_start
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_gb": peak_memory_gb(),
                # GPU memory at its peak during the evaluation (the inputs included).
                "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
                "mAP": float(m_ap),
                "rank1": float(cmc[0]),
            }
        )
    )


def predicted_gb(method: str, num_query: int, num_gallery: int) -> float:
    """Peak memory of a method from its arrays: the float32 input plus what it holds at once."""
    cells = num_query * num_gallery
    extra = {
        # argsort (int64), g_pids[indices] (int64) and the bool comparison, at once.
        "torchreid_py": 8 + 8 + 1,
        "torchreid_cy": 8 + 8 + 1,
    }.get(method, 0)
    return cells * (4 + extra) / 1e9


def main() -> None:
    args = parse_args()
    if args.run:
        run_child(args)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {METHODS}")
    if any(m.startswith("torchreid") for m in methods) and args.torchreid is None:
        raise SystemExit("the torchreid methods need --torchreid /path/to/deep-person-reid")
    rows = []
    for method in methods:
        queries = args.num_query
        full_gb = predicted_gb(method, args.num_query, args.num_gallery)
        if full_gb > args.memory_limit:
            queries = int(args.num_query * args.memory_limit / full_gb)
        if method == "torchreid_py":
            queries = min(queries, args.py_queries)
        if method != "dcsd" and args.max_queries is not None:
            queries = min(queries, args.max_queries)
        command = [sys.executable, __file__, "--run", method, "--queries", str(queries)]
        for flag in ("num_query", "num_gallery", "num_ids", "num_cams", "device", "seed"):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        if args.torchreid is not None:
            command += ["--torchreid", str(args.torchreid)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((method, queries, measured, full_gb))

    print(f"distances: {args.num_query:,} x {args.num_gallery:,} float32, device {args.device}")
    print(
        "| method | queries run | wall s | CPU s | wall s, all queries | CPU s, all queries | "
        "peak GB | mAP | rank-1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, queries, measured, full_gb in rows:
        scale = args.num_query / queries
        scaled = " (scaled)" if scale > 1 else ""
        all_wall = f"{measured['seconds'] * scale:.1f}{scaled}"
        all_cpu = f"{measured['cpu_seconds'] * scale:.1f}{scaled}"
        peak = f"{measured['peak_gb']:.2f}"
        if measured.get("peak_gpu_gb") is not None:
            peak += f" host, {measured['peak_gpu_gb']:.2f} GPU"
        if scale > 1:
            peak += f" ({full_gb:.0f} at full size, from its arrays)"
        print(
            f"| {method} | {queries:,} | {measured['seconds']:.1f} | "
            f"{measured['cpu_seconds']:.1f} | {all_wall} | {all_cpu} | {peak} | "
            f"{100 * measured['mAP']:.3f}% | {100 * measured['rank1']:.2f}% |"
        )


if __name__ == "__main__":
    main()
