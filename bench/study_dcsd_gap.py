"""Why does ResNet50-DCSD train below the static ResNet50? Controlled ablations on a validation
split (held-out training identities of the default synthetic domains), never on the test split.

Each row changes one thing against the DCSD default (or the static model); every run is cached
in ``--root``, so the study can be stopped and continued, and rows added later reuse what ran,
and recorded in ``--ledger`` (``bench/study_dcsd_gap_runs.jsonl``, committed: ``run_ledger``),
so a new machine trains only the runs it lacks.

    python bench/study_dcsd_gap.py --rows static,static_dw,dcsd --seeds 0 1
    python bench/study_dcsd_gap.py --quick          # tiny smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reid_runs import RunSpec, mean_std, run  # noqa: E402
from results_csv import append_rows  # noqa: E402
from run_ledger import add_ledger_option, chosen_ledger  # noqa: E402

from dcsd.data import holdout_identities, make_synthetic_domains  # noqa: E402

# Every finished run of the study (bench/run_ledger.py), kept with the code: its run folders
# are lost with the machine.
LEDGER = Path(__file__).resolve().parent / "study_dcsd_gap_runs.jsonl"

# The DCSD layer with DDF's FilterNorm (the library default: bounded, and DDF's weights load
# into it); every DCSD row changes one thing against it.
DCSD = ("resnet50_dcsd", {"filter_norm": "ddf"})
NO_FN = ("resnet50_dcsd", {"filter_norm": "none"})
NO_INFO_LOSS = {"domain_weight": 0.0, "camera_weight": 0.0}
NO_DECAY = {"weight_decay_norm": 0.0, "generator_weight_decay": 0.0}


@dataclass(frozen=True)
class Row:
    """One row of the study: what it changes against the DCSD default (or the static model)."""

    what: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    tweaks: tuple[str, ...] = ()
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    epochs: int | None = None  # None: --epochs
    balance_domains: bool = False
    loss: dict[str, Any] = field(default_factory=dict)  # DCSDLoss arguments


ROWS: dict[str, Row] = {
    "static": Row("static ResNet50 (dense 3x3)", "resnet50_reid", {}, (), {}, None),
    "static_dw": Row(
        "static ResNet50, depthwise 3x3 (DCSD's connectivity, no dynamic filters)",
        "resnet50_reid",
        {},
        ("depthwise",),
        {},
        None,
    ),
    "dcsd": Row(
        "ResNet50-DCSD S+D+C, DDF's FilterNorm (fixed spatial scale, as DDF; the default)",
        *DCSD,
        (),
        {},
        None,
    ),
    "dcsd_S": Row(
        "ResNet50-DCSD S only (DDF-like)",
        "resnet50_dcsd",
        {"factors": ("sample",), "filter_norm": "ddf"},
        (),
        {},
        None,
    ),
    "dcsd_ddf_init": Row(
        "DCSD + DDF init of generators (Kaiming fan_out, zero bias)",
        *DCSD,
        ("ddf_init",),
        {},
        None,
    ),
    "dcsd_no_fn": Row(
        "DCSD without filter bound (unbounded, cubic in its input)",
        *NO_FN,
        (),
        {},
        None,
    ),
    "dcsd_si": Row(
        "DCSD, spatial branch reads X + D + Cam (the paper's literal reading), DDF's FilterNorm",
        "resnet50_dcsd",
        {"filter_norm": "ddf", "spatial_information": True},
    ),
    "dcsd_gate": Row(
        "DCSD, static depthwise filter times bounded gates 1 + tanh (DCD/SE-like)",
        "resnet50_dcsd",
        {"filter_norm": "gate"},
    ),
    "dcsd_gate_si": Row(
        "DCSD, gates, spatial branch reads X + D + Cam",
        "resnet50_dcsd",
        {"filter_norm": "gate", "spatial_information": True},
    ),
    "dcsd_rms": Row(
        "DCSD, scale-only FilterNorm (RMS over the taps, filter means kept)",
        "resnet50_dcsd",
        {"filter_norm": "rms"},
        (),
        {},
        None,
    ),
    "dcsd_no_decay": Row(
        "DCSD, no weight decay on norms, biases, FilterNorm scales, generators",
        *DCSD,
        (),
        NO_DECAY,
        None,
    ),
    "dcsd_gen_lr3": Row(
        "DCSD, generators' learning rate x3",
        *DCSD,
        (),
        {"generator_lr_factor": 3.0},
        None,
    ),
    "dcsd_gen_lr0.3": Row(
        "DCSD, generators' learning rate x0.3",
        *DCSD,
        (),
        {"generator_lr_factor": 0.3},
        None,
    ),
    "dcsd_lr2": Row("DCSD, all learning rates x2 (7e-4)", *DCSD, (), {"lr": 7e-4}, None),
    "dcsd_gen_warmup5": Row(
        "DCSD (no FilterNorm), generators warm up over 5 epochs (the rest over 1)",
        *NO_FN,
        (),
        {"generator_warmup_epochs": 5.0},
        None,
    ),
    "static_bal": Row(
        "static ResNet50, domain-balanced batches", "resnet50_reid", balance_domains=True
    ),
    "dcsd_no_fn_bal": Row(
        "DCSD (no FilterNorm), domain-balanced batches", *NO_FN, balance_domains=True
    ),
    "static_30": Row("static ResNet50, 30 epochs", "resnet50_reid", {}, (), {}, 30),
    "static_dw_30": Row(
        "static depthwise ResNet50, 30 epochs",
        "resnet50_reid",
        {},
        ("depthwise",),
        {},
        30,
    ),
    "dcsd_30": Row("ResNet50-DCSD S+D+C, DDF's FilterNorm, 30 epochs", *DCSD, (), {}, 30),
    "dcsd_no_fn_30": Row(
        "DCSD without FilterNorm, 30 epochs",
        *NO_FN,
        (),
        {},
        30,
    ),
    "dcsd_S_no_fn_30": Row(
        "DCSD S only (no domain/camera branches or losses), no FilterNorm, 30 epochs",
        "resnet50_dcsd",
        {"factors": ("sample",), "filter_norm": "none"},
        (),
        {},
        30,
    ),
    "dcsd_no_info_loss_30": Row(
        "DCSD S+D+C (no FilterNorm), domain and camera losses off (weight 0), 30 epochs",
        *NO_FN,
        epochs=30,
        loss=NO_INFO_LOSS,
    ),
    "dcsd_gen_wd10_30": Row(
        "DCSD (no FilterNorm), generators' weight decay x10 (5e-3), 30 epochs",
        *NO_FN,
        (),
        {"generator_weight_decay": 5e-3},
        30,
    ),
    "static_60": Row("static ResNet50, 60 epochs", "resnet50_reid", {}, (), {}, 60),
    "static_dw_60": Row(
        "static depthwise ResNet50, 60 epochs",
        "resnet50_reid",
        {},
        ("depthwise",),
        {},
        60,
    ),
    "dcsd_no_fn_60": Row(
        "DCSD without FilterNorm, 60 epochs",
        *NO_FN,
        (),
        {},
        60,
    ),
    "dcsd_rms_30": Row(
        "DCSD, scale-only FilterNorm, 30 epochs",
        "resnet50_dcsd",
        {"filter_norm": "rms"},
        (),
        {},
        30,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="static,static_dw,dcsd", help=f"among {list(ROWS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--val-ids", type=int, default=10, help="held-out ids per domain")
    parser.add_argument("--root", type=Path, default=Path("runs/study_dcsd_gap"))
    add_ledger_option(parser, LEDGER)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--results", type=Path, help="append the table here (bench/RESULTS.md)")
    parser.add_argument(
        "--csv", type=Path, help="append the rows here (bench/study_dcsd_gap.csv), as --study"
    )
    parser.add_argument("--study", help="the rows' name in the CSV (e.g. 30ep), with --csv")
    args = parser.parse_args()
    args.ledger = chosen_ledger(args, LEDGER)
    if (args.csv is None) != (args.study is None):
        parser.error("--csv and --study go together")
    rows = [name.strip() for name in args.rows.split(",")]
    unknown = [name for name in rows if name not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {list(ROWS)}")
    size = dict(train_ids_per_domain=6, test_ids_per_domain=3) if args.quick else {}
    val_ids = 2 if args.quick else args.val_ids
    datasets = [
        holdout_identities(d, val_ids, seed=0) for d in make_synthetic_domains(seed=0, **size)
    ]
    epochs = 1 if args.quick else args.epochs
    device = torch.device(args.device)
    lines = [
        "| row | what | seeds | val mAP per domain | mean mAP ± seed std | "
        f"Δ vs {rows[0]}, paired by seed | mean rank-1 | train id / triplet loss | s/run |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines))
    baseline: dict[int, float] = {}
    csv_rows = []
    for name in rows:
        row = ROWS[name]
        results = []
        for seed in args.seeds:
            spec = RunSpec(
                model=row.model,
                model_kwargs=row.model_kwargs,
                tweaks=row.tweaks,
                train=row.train,
                domains=tuple(d.name for d in datasets),
                seed=seed,
                epochs=epochs if args.quick or row.epochs is None else row.epochs,
                split="val",
                balance_domains=row.balance_domains,
                loss=row.loss,
                data=f"default preset seed 0, {val_ids} val ids/domain"
                + (" quick" if args.quick else ""),
            )
            results.append(run(spec, datasets, args.root, device, ledger=args.ledger))
        per_domain = {d: [r["metrics"][d]["mAP"] for r in results] for d in results[0]["metrics"]}
        means = [statistics.mean(r["metrics"][d]["mAP"] for d in per_domain) for r in results]
        rank1 = [statistics.mean(r["metrics"][d]["rank1"] for d in per_domain) for r in results]
        mean, spread = mean_std(means)
        # The first row is the reference: the same seeds share data order and initial draws,
        # so per-seed differences are less noisy than the two rows' spreads suggest.
        baseline = baseline or dict(zip(args.seeds, means, strict=True))
        delta, delta_spread = mean_std(
            [value - baseline[seed] for seed, value in zip(args.seeds, means, strict=True)]
        )
        domains = " / ".join(f"{statistics.mean(v):.1f}" for v in per_domain.values())
        seconds = statistics.mean(r["seconds"] for r in results)
        losses = [r["train_loss"] for r in results if r.get("train_loss")]
        fit = (
            f"{statistics.mean(x['id'] for x in losses):.2f} / "
            f"{statistics.mean(x['triplet'] for x in losses):.2f}"
            if len(losses) == len(results)
            else "-"
        )
        lines.append(
            f"| {name} | {row.what} | {len(results)} | {domains} | "
            f"{mean:.1f} ± {spread:.1f} | {delta:+.1f} ± {delta_spread:.1f} | "
            f"{statistics.mean(rank1):.1f} | {fit} | {seconds:.0f} |"
        )
        print(lines[-1], flush=True)
        ids = [x["id"] for x in losses] if len(losses) == len(results) else []
        triplets = [x["triplet"] for x in losses] if ids else []
        csv_rows.append(
            {
                "study": args.study,
                "baseline": rows[0],
                "row": name,
                "what": row.what,
                "seeds": len(results),
                **{f"map_{d}": f"{statistics.mean(v):.1f}" for d, v in per_domain.items()},
                "mean_map": f"{mean:.1f}",
                "mean_map_std": f"{spread:.1f}",
                "delta": f"{delta:.1f}",
                "delta_std": f"{delta_spread:.1f}",
                "mean_rank1": f"{statistics.mean(rank1):.1f}",
                "train_id_loss": f"{statistics.mean(ids):.2f}" if ids else "",
                "train_triplet_loss": f"{statistics.mean(triplets):.2f}" if ids else "",
                "s_per_run": f"{seconds:.0f}",
            }
        )
    if args.csv:
        append_rows(args.csv, csv_rows)
    if args.results:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M+00:00")
        device = args.device if args.device != "cpu" else f"CPU, {torch.get_num_threads()} threads"
        header = [
            "## Why ResNet50-DCSD trains below the static ResNet50: validation ablations",
            "",
            f"- device: {device}; torch {torch.__version__}; {stamp}",
            f"- data: default synthetic preset (seed 0), {val_ids} training identities per domain "
            f"held out as validation (`holdout_identities`); {epochs} epochs from scratch unless "
            "the row says otherwise; P x K = 8 x 4, 64x32; train losses: the last epoch's "
            "mean label-smoothed identity CE and batch-hard triplet loss",
            f"- command: `python bench/study_dcsd_gap.py {' '.join(sys.argv[1:])}`",
            "",
        ]
        with args.results.open("a") as out:
            out.write("\n" + "\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
