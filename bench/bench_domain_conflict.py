"""The paper's Tables II, V and VI in miniature, on synthetic domains with a real domain conflict.

Trains, for every seed, on the ``conflict_mild`` preset of the synthetic generator (summer /
winter / dusk domains whose identity cues contradict each other; the dusk cameras rotate hues by
up to 57 degrees, the ``conflict`` preset's 150 kept its static models below 50 mAP on dusk),
with 64 training identities per domain for 30 joint epochs (preset, identities and schedule
chosen on the static rows and a test-sized val split, before any DCSD row ran), from
proxy-pretrained starts
(``bench/pretrain_proxy.py``: a stand-in for the paper's ImageNet start, never ImageNet):

- Table II: the static ResNet50 from the proxy static start, per domain ("alone") and joint;
  a control, the static depthwise ResNet50 (DCSD's connectivity without dynamic filters) joint
  from the proxy static depthwise start;
  ResNet50-DCSD joint and per domain from three starts: the proxy DDF network (DDF's layer
  loaded through ``load_ddf_backbone``: the paper's likely start), the proxy static network with
  fresh generators (``pretrained="imagenet"``'s path) and from scratch; and from scratch with
  the gate layer (``filter_norm="gate"``: D and Cam can scale its filters, where DDF's
  FilterNorm standardises each one), joint also without weight decay on its generators;
- Table V: DCSD joint from the DDF start with the factors S, S+D, S+C, S+D+C;
- Table VI: S+D+C without the stop gradient, and S+D+C with the domain and camera classifiers'
  losses reaching the backbone (``detach_information_input=False``);
- the spatial branch reading X + D + Cam (the paper's literal text), joint, DDF start.

It prints per-domain mAP / rank-1 as mean ± std over seeds, checks the learning regime (static
alone >= 50 mAP on every domain) and the domain-conflict property (static joint below static
alone on a domain by more than twice the seed std), appends the tables with device, versions
and date to ``--results`` and draws ``--figure``. ``--split val`` evaluates on held-out training
identities instead of the test split: the schedule is chosen there, on the static rows alone
(``--static-only``), before any DCSD row runs. Every run is cached in ``--root`` (a finished run
is not trained again), so an interrupted benchmark continues where it stopped, and recorded in
``--ledger`` (``bench/bench_domain_conflict_runs.jsonl``, committed: a new machine reads the
runs recorded there and trains the rest); ``--jobs`` runs
that many trainings side by side (``bench/run_queue.py``; the missing proxy starts pretrain
among them, then the static rows, the joint rows and the per-domain rows), each with the
machine's cores divided by ``--jobs`` as its threads: give one call every row, not two calls
side by side, which oversubscribe the cores (two calls of ``--jobs 1`` on 2 cores, 2 threads
each: a static run's epochs at a median 8.4 images/s, against 31.2 in one call of ``--jobs
2``); a run that another call is training in the same ``--root`` is passed over (its run lock
is held) and its row left unfinished. ``--deadline
MINUTES`` starts no run after that time and stops the running ones: it prints the tables of
the rows whose runs all finished (none without the static rows) and appends nothing, and the
same command continues the rest (a short GPU lease; cached runs are read, never queued). Uses
the GPU when there is one.

    python bench/pretrain_proxy.py                                  # the starts, once
    python bench/bench_domain_conflict.py --static-only --split val # choose the schedule
    python bench/bench_domain_conflict.py --jobs 2                  # 3 seeds, every row
    python bench/bench_domain_conflict.py --jobs 12 --deadline 8    # a GPU lease, in parts
    python bench/bench_domain_conflict.py --quick                   # tiny smoke run (CI)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_proxy import PoolConfig, is_pretrained, pretrain, quick_config, starts  # noqa: E402
from reid_runs import (  # noqa: E402
    DIGEST_DIGITS,
    RecordedStart,
    RunSpec,
    cached_result,
    cpu_description,
    is_digest,
    ledger_start_digests,
    mean_std,
    run,
    start_digest,
    start_init,
)
from results_csv import append_rows  # noqa: E402
from run_ledger import add_ledger_option, chosen_ledger  # noqa: E402
from run_queue import Task, run_tasks  # noqa: E402

from dcsd.data import (  # noqa: E402
    IdentityBatchSampler,
    MultiDomainDataset,
    holdout_identities,
    make_synthetic_domains,
)
from dcsd.data.synthetic import PRESETS  # noqa: E402
from dcsd.engine import RunLockedError  # noqa: E402


@dataclass(frozen=True)
class Row:
    """One line of the tables: a model trained jointly or one model per domain, from a start
    (``""``: scratch, or a name of :func:`pretrain_proxy.starts`). ``key`` names it on the
    command line (``--rows``); ``tweaks`` are :data:`reid_runs.TWEAKS` applied to the model;
    ``train`` overrides the benchmark's :class:`dcsd.engine.TrainConfig`; ``pretraining``, the
    digest of another pretraining of ``init`` (``--versus-start``) whose runs the row reads,
    ``""`` for the start this call holds."""

    key: str
    name: str
    table: str
    model: str
    model_kwargs: dict
    per_domain: bool = False
    init: str = "proxy_ddf"
    tweaks: tuple[str, ...] = ()
    train: dict = field(default_factory=dict)
    pretraining: str = ""


DDF = {"filter_norm": "ddf"}
GATE = {"filter_norm": "gate"}
DCSD = "resnet50_dcsd"
ROWS = (
    Row("static_alone", "static alone", "II", "resnet50_reid", {}, True, "proxy_static"),
    Row("static_joint", "static joint", "II", "resnet50_reid", {}, init="proxy_static"),
    Row(
        "static_dw_joint",
        "static depthwise joint (control)",
        "II",
        "resnet50_reid",
        {},
        init="proxy_static_dw",
        tweaks=("depthwise",),
    ),
    Row("dcsd_alone", "DCSD alone", "II", DCSD, DDF, per_domain=True),
    Row("dcsd_joint", "DCSD joint (S+D+C)", "II", DCSD, DDF),
    Row("dcsd_alone_static", "DCSD alone, static start", "II", DCSD, DDF, True, "proxy_static"),
    Row("dcsd_joint_static", "DCSD joint, static start", "II", DCSD, DDF, init="proxy_static"),
    Row("dcsd_alone_scratch", "DCSD alone, scratch", "II", DCSD, DDF, per_domain=True, init=""),
    Row("dcsd_joint_scratch", "DCSD joint, scratch", "II", DCSD, DDF, init=""),
    # DDF's FilterNorm standardises every generated filter over its taps (zero mean, unit std)
    # before a scale all samples share, so D and Cam change a filter's pattern, not its
    # magnitude; the gate layer (a static filter times 1 + tanh of the generated one) can
    # scale each channel by domain. No DDF start loads into it: both start from scratch.
    Row("dcsd_joint_gate", "DCSD joint, scratch, gate layer", "II", DCSD, GATE, init=""),
    Row("dcsd_alone_gate", "DCSD alone, scratch, gate layer", "II", DCSD, GATE, True, ""),
    # The gate layer's channel gates start at zero and stayed near it (largest weight of their
    # last layer 0.016-0.066): under Adam with L2 added to the gradient, the weight decay pulls a
    # weight whose gradient is weak back at the learning rate's pace. Without decay on the
    # generators' weights they leave zero, a little (docs/research.md: val split, 2 seeds).
    Row(
        "dcsd_joint_gate_no_decay",
        "DCSD joint, scratch, gate layer, generators without weight decay",
        "II",
        DCSD,
        GATE,
        init="",
        train={"generator_weight_decay": 0.0},
    ),
    Row("s", "S", "V", DCSD, {**DDF, "factors": ("sample",)}),
    Row("sd", "S+D", "V", DCSD, {**DDF, "factors": ("sample", "domain")}),
    Row("sc", "S+C", "V", DCSD, {**DDF, "factors": ("sample", "camera")}),
    Row("no_stop_gradient", "S+D+C, no stop gradient", "VI", DCSD, {**DDF, "stop_gradient": False}),
    Row(
        "dcsd_joint_info_attached",
        "S+D+C, domain/camera losses reach the backbone",
        "VI",
        DCSD,
        {**DDF, "detach_information_input": False},
    ),
    Row(
        "spatial_dc",
        "S+D+C, spatial branch reads X + D + Cam",
        "III",
        DCSD,
        {**DDF, "spatial_information": True},
    ),
)
STATIC_ROWS = ROWS[:2]
# Every finished run of the benchmark (bench/run_ledger.py): its folders are lost with the
# machine, its results are kept here and read by the next machine that holds the same proxy
# starts (start_note says when it does not).
LEDGER = Path(__file__).resolve().parent / "bench_domain_conflict_runs.jsonl"
GOAL_ROWS = ("DCSD joint (S+D+C)", "S", "S+D", "S+C")
# The goal's comparisons and the studies', as (row key, minus row key): each is reported
# paired by seed. The start rows against the DDF start, DCSD from the static start against the
# static model trained from the same weights (the layer and its fresh generators alone), the
# depthwise control against the dense model (the connectivity alone), and DCSD's own conflict
# (alone minus joint) beside the static one.
PAIRS = (
    ("dcsd_joint", "static_joint"),
    ("dcsd_joint", "static_alone"),
    ("sd", "s"),
    ("sc", "s"),
    ("dcsd_joint", "sd"),
    ("dcsd_joint", "sc"),
    ("dcsd_joint", "s"),
    ("dcsd_joint", "dcsd_joint_info_attached"),
    ("dcsd_joint", "no_stop_gradient"),
    ("dcsd_joint", "dcsd_joint_static"),
    ("dcsd_joint", "dcsd_joint_scratch"),
    ("dcsd_joint_static", "static_joint"),
    ("dcsd_joint", "static_dw_joint"),
    ("static_dw_joint", "static_joint"),
    ("dcsd_alone", "static_alone"),
    ("dcsd_alone", "dcsd_joint"),
    ("dcsd_alone", "dcsd_alone_static"),
    ("dcsd_alone", "dcsd_alone_scratch"),
    ("dcsd_alone_static", "static_alone"),
    ("spatial_dc", "dcsd_joint"),
    ("dcsd_alone_scratch", "dcsd_joint_scratch"),
    ("dcsd_joint_gate", "dcsd_joint_scratch"),
    ("dcsd_joint_gate_no_decay", "dcsd_joint_gate"),
    ("dcsd_alone_gate", "dcsd_alone_scratch"),
    ("dcsd_alone_gate", "dcsd_joint_gate"),
)
# The paper's claim itself, paired by seed: a DCSD row's conflict (alone minus joint) minus the
# conflict of the row it is compared with; negative where joint training costs the first less.
CONFLICT_PAIRS = (
    (("dcsd_alone", "dcsd_joint"), ("static_alone", "static_joint")),
    (("dcsd_alone_static", "dcsd_joint_static"), ("static_alone", "static_joint")),
    (("dcsd_alone_scratch", "dcsd_joint_scratch"), ("static_alone", "static_joint")),
    (("dcsd_alone", "dcsd_joint"), ("dcsd_alone_scratch", "dcsd_joint_scratch")),
    (("dcsd_alone_gate", "dcsd_joint_gate"), ("dcsd_alone_scratch", "dcsd_joint_scratch")),
)


def select_rows(
    keys: list[str] | None, static_only: bool, without_static: bool = False
) -> tuple[Row, ...]:
    """The static rows (every check compares with them) and the rows ``keys`` name (all
    without ``keys``), in table order; ``without_static``: the rows ``keys`` name alone.

    Raises:
        SystemExit: a key names no row (the known keys are listed), or ``without_static``
            comes without ``keys``.
    """
    if static_only:
        return STATIC_ROWS
    if keys is None:
        if without_static:
            raise SystemExit("--without-static needs --rows: the rows to train")
        return ROWS
    known = {row.key for row in ROWS}
    unknown = sorted(set(keys) - known)
    if unknown:
        raise SystemExit(f"--rows: no row {unknown}; known: {[row.key for row in ROWS]}")
    return tuple(
        row for row in ROWS if row.key in keys or (row in STATIC_ROWS and not without_static)
    )


def with_versus(rows: tuple[Row, ...], versus: dict[str, RecordedStart]) -> tuple[Row, ...]:
    """``rows``, each row from a start ``versus`` names followed by the same row from that
    start's other pretraining (its digest in the name): its runs are read from the ledger, none
    is trained, and :func:`comparisons` pairs the two by seed."""
    out = []
    for row in rows:
        out.append(row)
        if row.init in versus:
            digest = versus[row.init].digest
            out.append(replace(row, name=f"{row.name} [{digest}]", pretraining=digest))
    return tuple(out)


def row_starts(
    row: Row, starts: dict[str, Path | RecordedStart]
) -> dict[str, Path | RecordedStart]:
    """The starts ``row``'s runs are named by: ``starts``, with the row's own pretraining
    (``Row.pretraining``) in place of its start's."""
    return {**starts, row.init: RecordedStart(row.pretraining)} if row.pretraining else starts


def iterations_per_epoch(datasets, batch) -> int:
    data = MultiDomainDataset(datasets)
    return len(IdentityBatchSampler(data.train, num_identities=batch[0], num_instances=batch[1]))


def row_runs(row, datasets, args, seed) -> list[tuple[RunSpec, list]]:
    """The runs of one row and seed: one joint run, or one per domain.

    A per-domain model trains for as many iterations as a joint one (more epochs of its smaller
    set), so that "alone" is not handicapped by a shorter schedule: in the paper every model
    trains to convergence."""
    groups = [[d] for d in datasets] if row.per_domain else [datasets]
    joint_iterations = args.epochs * iterations_per_epoch(datasets, args.batch)
    runs = []
    for group in groups:
        epochs = max(1, round(joint_iterations / iterations_per_epoch(group, args.batch)))
        spec = RunSpec(
            model=row.model,
            model_kwargs=row.model_kwargs,
            tweaks=row.tweaks,
            train=row.train,
            domains=tuple(d.name for d in group),
            seed=seed,
            epochs=epochs,
            batch=tuple(args.batch),
            image_size=tuple(args.image_size),
            split=args.split,
            data=args.data_label,
            init=start_init(row.init, args.proxy_key) if row.init else "",
        )
        runs.append((spec, group))
    return runs


def _run(spec, group, root, device, starts, ledger) -> dict:
    return run(spec, group, root, device, starts=starts, ledger=ledger)


def _pretrain_task(start: str) -> str:
    return f"pretrain {start}"


def plan(rows, datasets, args, device, starts, missing_starts):
    """The benchmark's tasks in the order they start, the results of the cached runs (read
    here, never queued) and the run names of each ``(row name, seed)``. The missing proxy
    starts come first (``needs`` of the runs that load them; the runs from scratch fill the
    free workers meanwhile), then the static rows (every check reads them), the other joint
    rows and the per-domain rows, each row's seeds together, so that a benchmark stopped early
    has whole rows."""
    tasks = [
        Task(
            _pretrain_task(name),
            pretrain,
            (name.removeprefix("proxy_"), args.proxy, args.proxy_root, device, args.quick),
        )
        for name in missing_starts
    ]
    cached, names = {}, {}
    for row in sorted(rows, key=lambda row: (row not in STATIC_ROWS, row.per_domain)):
        own = row_starts(row, starts)
        for seed in args.seeds:
            names[(row.name, seed)] = []
            for spec, group in row_runs(row, datasets, args, seed):
                name = f"seed {seed}: {row.name} ({', '.join(spec.domains)})"
                names[(row.name, seed)].append(name)
                result = cached_result(spec, group, args.root, own, args.ledger, device)
                if result is not None:
                    cached[name] = result
                    continue
                if row.init and isinstance(own[row.init], RecordedStart):
                    continue  # known by its digest alone: read, never trained
                needs = _pretrain_task(row.init) if row.init in missing_starts else None
                task_args = (spec, group, args.root, device, own, args.ledger)
                tasks.append(Task(name, _run, task_args, needs))
    return tasks, cached, names


def run_all(
    rows, datasets, args, device, starts, missing_starts, threads
) -> tuple[dict[str, list], list[dict], dict[str, str]]:
    """``{row name: [{domain: {"mAP", "rank1"}} per seed]}`` of the rows whose runs all
    finished (every row without ``--deadline``, but for runs another call holds), those runs'
    results (trained or read), and ``{row name: why}`` of the rows with a run that another call
    is training (its run lock's message): that run is passed over and the others go on.
    ``args.jobs`` tasks run side by side of ``threads`` threads each (each run cached, so the
    order does not change a result)."""
    tasks, finished, names = plan(rows, datasets, args, device, starts, missing_starts)
    held: dict[str, str] = {}

    def passed(task: Task, error: Exception) -> None:
        print(f"{task.name} passed over: {error}", flush=True)
        held[task.name] = str(error)

    finished |= run_tasks(
        tasks,
        args.jobs,
        None if args.deadline is None else args.deadline * 60,
        threads,
        on_done=lambda task, _: print(f"{task.name} done", flush=True),
        passing=(RunLockedError,),
        on_passed=passed,
    )
    results, runs, held_rows = {}, [], {}
    for row in rows:
        row_runs = [names[(row.name, seed)] for seed in args.seeds]
        if all(name in finished for seed_runs in row_runs for name in seed_runs):
            results[row.name] = [
                {domain: m for name in seed_runs for domain, m in finished[name]["metrics"].items()}
                for seed_runs in row_runs
            ]
            runs += [finished[name] for seed_runs in row_runs for name in seed_runs]
        why = [held[name] for seed_runs in row_runs for name in seed_runs if name in held]
        if why:
            held_rows[row.name] = why[0]
    return results, runs, held_rows


def ran_with(runs: list[dict]) -> str:
    """What the reported runs ran with, whether trained by this call or read from the cache
    or the ledger: the runs per device, thread count and versions, and the range of their
    training seconds (a resumed run timed its last part only: left out of the range)."""
    groups: dict[str, int] = {}
    for result in runs:
        setup = result.get("ran_with")
        key = (
            "cpu, threads and versions not recorded"
            if setup is None
            else f"{setup['device']}"
            + (f" ({setup['cpu']})" if "cpu" in setup else "")
            + f", {setup['threads']} thread(s), torch {setup['torch']}, triton {setup['triton']}"
        )
        groups[key] = groups.get(key, 0) + 1
    whole = [result["seconds"] for result in runs if not result.get("resumed_at_epoch")]
    resumed = len(runs) - len(whole)
    return (
        "; ".join(f"{count} on {key}" for key, count in groups.items())
        + (f"; {min(whole):.0f}-{max(whole):.0f} s a run" if whole else "")
        + (f" ({resumed} resumed run(s) left out)" if resumed else "")
    )


def start_note(
    inits: list[str],
    starts: dict[str, Path | RecordedStart],
    missing: list[str],
    ledger: Path | None,
    device: torch.device,
    pool_key: str,
    versus: dict[str, RecordedStart] | None = None,
) -> str:
    """The proxy starts ``inits`` here (their digests; ``missing``: not pretrained) beside the
    ledger's runs on ``device``'s type from each, pretrained on the proxy pool ``pool_key``
    (runs from another pool are another experiment, not another machine's start). A run is
    read from the ledger only with the very start file it trained from, and a start pretrained
    on another machine can differ (another CPU can give other weights), so a user learns
    before hours of training that the recorded runs will not be read, and why; the runs from a
    pretraining ``versus`` names (``--versus-start``) are read, as the rows ``[DIGEST]``."""
    recorded = ledger_start_digests(ledger, device.type)
    versus = versus or {}
    parts, foreign = [], False
    for name in inits:
        known_by_digest = isinstance(starts[name], RecordedStart)
        here = None if name in missing else start_digest(starts[name])
        beside = versus[name].digest if name in versus else None
        runs = recorded.get(start_init(name, pool_key), {})
        other = {digest: count for digest, count in runs.items() if digest not in (here, beside)}
        foreign |= bool(other)
        this_one = "it" if known_by_digest else "this pretraining"
        labels = {beside: f"{beside} (--versus-start: the rows [{beside}])", here: this_one}
        recorded_runs = ", ".join(
            f"{count} run(s) from {labels.get(digest, digest)}" for digest, count in runs.items()
        )
        remarks = [f"the ledger: {recorded_runs}"] if runs else []
        if known_by_digest:
            remarks.insert(0, "--recorded-start: its runs are read, none trained")
        parts.append(
            f"{name} {here or 'not pretrained yet'}"
            + (f" ({'; '.join(remarks)})" if remarks else "")
        )
    note = f"proxy starts: {'; '.join(parts)}"
    if foreign:
        machine = (
            f"this CPU: {cpu_description()}"
            if device.type == "cpu"
            else f"this device: {device.type}"
        )
        note += (
            ". The ledger's runs from another pretraining are read only with its start file: "
            "copy that machine's --proxy-root here, or name it with --recorded-start to report "
            "them, or with --versus-start beside this one's (another machine can pretrain the "
            "starts to other weights: an Intel Xeon "
            f"and an AMD EPYC, both AVX-512, did; {machine})"
        )
    return note


def unfinished_note(rows, results, args, held: dict[str, str] | None = None) -> str:
    """Why rows have runs missing: a run from a ``--recorded-start`` is never trained here (its
    start file is needed), a row from a ``--versus-start`` is only ever read, a run another
    call is training (``held``: ``{row name: its run lock's message}``) was passed over, and
    the others stopped at ``--deadline``: the same command continues them."""
    held = held or {}
    unfinished = [row for row in rows if row.name not in results]
    beside = [row.name for row in unfinished if row.pretraining]
    recorded = [
        row.name
        for row in unfinished
        if row.init in args.recorded_starts and row.name not in beside
    ]
    locked = [row.name for row in unfinished if row.name in held and row.name not in recorded]
    stopped = [row.name for row in unfinished if row.name not in beside + recorded + locked]
    notes = []
    if locked:
        notes.append(
            f"rows {locked} have runs another call is training ({held[locked[0]]}): the same "
            "command, once that call ends, reads them from the cache"
        )
    if stopped:
        notes.append(
            f"stopped at the deadline ({args.deadline:g} min): rows {stopped} unfinished; the "
            "same command continues them (finished runs are cached, stopped ones resume from "
            "their last checkpoint)"
        )
    if recorded:
        notes.append(
            f"rows {recorded} have runs the ledger does not hold from their --recorded-start, "
            "which this machine cannot train: that needs the start file"
        )
    if beside:
        notes.append(
            f"rows {beside} (--versus-start) are read, never trained, and the ledger lacks some "
            "of their runs: left out, with their comparisons"
        )
    return "; ".join(notes) + ("" if results else "; no row finished")


def table(rows, results, domains, metric) -> str:
    header = f"| row | table | {' | '.join(domains)} | mean |"
    lines = [header, "|---|---|" + "---:|" * (len(domains) + 1)]
    for row in rows:
        per_seed = results[row.name]
        cells = []
        for domain in domains:
            mean, std = mean_std([m[domain][metric] for m in per_seed])
            cells.append(f"{mean:.1f} ± {std:.1f}")
        mean, std = mean_std([statistics.mean(m[d][metric] for d in domains) for m in per_seed])
        cells.append(f"{mean:.1f} ± {std:.1f}")
        lines.append(f"| {row.name} | {row.table} | {' | '.join(cells)} |")
    return "\n".join(lines)


def csv_rows(rows, results, domains, args) -> list[dict[str, str]]:
    """The mAP table's rows for bench/bench_domain_conflict.csv: mean and std over seeds; one
    pretraining per table, so the rows from another (``--versus-start``) stay out."""
    out = []
    for row in rows:
        if row.pretraining:
            continue
        per_seed = results[row.name]
        cells = {}
        for domain in domains:
            mean, std = mean_std([m[domain]["mAP"] for m in per_seed])
            cells |= {f"map_{domain}": f"{mean:.1f}", f"map_{domain}_std": f"{std:.1f}"}
        mean, std = mean_std([statistics.mean(m[d]["mAP"] for d in domains) for m in per_seed])
        out.append(
            {
                "preset": args.preset,
                "split": args.split,
                "train_ids": "quick" if args.quick else str(args.train_ids),
                "test_ids": "quick" if args.quick else str(args.test_ids),
                # The val split's held-out identities per domain ("-" on the test split).
                "val_ids": str(args.val_ids) if args.split == "val" else "-",
                "epochs": str(args.epochs),
                # The proxy pretraining's pool, domains x identities per domain: the starts.
                "proxy_pool": f"{args.proxy.domains}x{args.proxy.ids_per_domain}",
                "seeds": " ".join(map(str, args.seeds)),
                "row": row.name,
                "table": row.table,
                **cells,
                "map_mean": f"{mean:.1f}",
                "map_mean_std": f"{std:.1f}",
            }
        )
    return out


def make_datasets(args) -> tuple[list, str]:
    """The benchmark's synthetic domains and the label its cache keys carry. ``args.train_ids``
    identities per domain train in either split; ``--split val`` draws ``args.val_ids`` more
    and holds them out as its query and gallery identities."""
    drawn = args.train_ids + (args.val_ids if args.split == "val" else 0)
    size = {"train_ids_per_domain": drawn, "test_ids_per_domain": args.test_ids}
    if args.quick:
        size = dict(train_ids_per_domain=4, test_ids_per_domain=3)
    datasets = make_synthetic_domains(
        preset=args.preset, seed=args.data_seed, image_size=args.image_size, **size
    )
    label = f"{args.preset} preset, data seed {args.data_seed}" + (" quick" if args.quick else "")
    if args.test_ids != 32 and not args.quick:  # 32, the preset's own, keeps the cache keys
        label += f", {args.test_ids} test ids"
    if drawn != 32 and not args.quick:  # likewise for the preset's 32 training ids
        label += f", {drawn} train ids"  # drawn: the held-out ones included
    if args.split == "val":
        datasets = [holdout_identities(d, args.val_ids, seed=0) for d in datasets]
        label += f", {args.val_ids} val ids/domain"
    return datasets, label


def regime_check(results, domains, floor: float = 50.0) -> tuple[str, bool]:
    """Static alone against ``floor`` mAP on every domain: do the models learn?"""
    means = {d: statistics.mean(m[d]["mAP"] for m in results["static alone"]) for d in domains}
    ok = all(value >= floor for value in means.values())
    cells = ", ".join(f"{d} {value:.1f}" for d, value in means.items())
    return f"Static alone >= {floor:g} mAP on every domain: {'yes' if ok else 'NO'} ({cells})", ok


def conflict_check(results, domains) -> tuple[str, bool]:
    """Static alone minus static joint per domain, against twice the larger seed std."""
    lines = ["| domain | alone - joint (mAP) | 2 x seed std | conflict |", "|---|---:|---:|---|"]
    found = False
    for domain in domains:
        alone = [m[domain]["mAP"] for m in results["static alone"]]
        joint = [m[domain]["mAP"] for m in results["static joint"]]
        gap = statistics.mean(alone) - statistics.mean(joint)
        bound = 2 * max(mean_std(alone)[1], mean_std(joint)[1])
        conflict = gap > bound
        found |= conflict
        lines.append(f"| {domain} | {gap:+.1f} | {bound:.1f} | {'yes' if conflict else 'no'} |")
    return "\n".join(lines), found


def spread_check(rows, results, domains, limit: float = 2.0) -> tuple[str, bool]:
    """The seed std of each row's per-domain mAP against ``limit``: is the test split large
    enough for the differences the tables compare?"""
    lines = [
        f"| row | {' | '.join(domains)} | all <= {limit:g} |",
        "|---|" + "---:|" * len(domains) + "---|",
    ]
    every = True
    for row in rows:
        stds = [mean_std([m[d]["mAP"] for m in results[row.name]])[1] for d in domains]
        ok = all(std <= limit for std in stds)
        every &= ok
        cells = " | ".join(f"{std:.1f}" for std in stds)
        lines.append(f"| {row.name} | {cells} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines), every


def goal_check(results, domains) -> list[str]:
    """The issue's goal, line by line: DCSD joint >= static joint and alone on every domain
    (means over seeds); S <= S+D, S+C <= S+D+C (mean over domains)."""

    def mean(row, domain=None):
        per_seed = results[row]
        if domain is None:
            return statistics.mean(statistics.mean(m[d]["mAP"] for d in domains) for m in per_seed)
        return statistics.mean(m[domain]["mAP"] for m in per_seed)

    lines = []
    for domain in domains:
        dcsd_joint = mean("DCSD joint (S+D+C)", domain)
        for other in ("static joint", "static alone"):
            ok = dcsd_joint >= mean(other, domain)
            lines.append(
                f"- {domain}: DCSD joint {dcsd_joint:.1f} >= {other} {mean(other, domain):.1f}: "
                f"{'yes' if ok else 'NO'}"
            )
    full = mean("DCSD joint (S+D+C)")
    for low, high in (("S", "S+D"), ("S", "S+C"), ("S+D", "S+D+C"), ("S+C", "S+D+C")):
        high_value = full if high == "S+D+C" else mean(high)
        ok = mean(low) <= high_value
        lines.append(f"- {low} {mean(low):.1f} <= {high} {high_value:.1f}: {'yes' if ok else 'NO'}")
    return lines


Comparison = tuple[str, tuple[tuple[int, str], ...]]


def comparisons(rows: tuple[Row, ...] = ()) -> list[Comparison]:
    """Every comparison of :data:`PAIRS` and :data:`CONFLICT_PAIRS` as its label and its terms,
    ``(sign, row name)``: the compared value is the signed sum of the rows' mAP; first, each
    row of ``rows`` from another pretraining (:func:`with_versus`) against the same row from
    this one: the pretraining's own variation."""
    names = {row.key: row.name for row in ROWS}
    found: list[Comparison] = [
        (f"{names[row.key]} − {row.name}", ((1, names[row.key]), (-1, row.name)))
        for row in rows
        if row.pretraining
    ]
    found += [
        (f"{names[row]} − {names[minus]}", ((1, names[row]), (-1, names[minus])))
        for row, minus in PAIRS
    ]
    for (alone, joint), (other_alone, other_joint) in CONFLICT_PAIRS:
        label = f"({names[alone]} − {names[joint]}) − ({names[other_alone]} − {names[other_joint]})"
        terms = ((1, names[alone]), (-1, names[joint]), (-1, names[other_alone]))
        found.append((label, (*terms, (1, names[other_joint]))))
    return found


def paired_check(results, domains, rows: tuple[Row, ...] = ()) -> str:
    """Each of :func:`comparisons` (``rows``' own among them) whose rows all finished, paired by
    seed: the mean ± std over seeds of the per-seed difference, per domain and over the
    domains, and each seed's difference over the domains (the rows must share their seeds)."""
    lines = [
        f"| difference | {' | '.join(domains)} | mean | per seed |",
        "|---|" + "---:|" * (len(domains) + 1) + "---|",
    ]
    for label, terms in comparisons(rows):
        if any(name not in results for _, name in terms):
            continue
        signs = [sign for sign, _ in terms]
        # one {domain: the signed sum of the rows' mAP} per seed
        diffs = [
            {d: sum(s * run[d]["mAP"] for s, run in zip(signs, runs, strict=True)) for d in domains}
            for runs in zip(*(results[name] for _, name in terms), strict=True)
        ]
        cells = []
        for domain in domains:
            mean, std = mean_std([diff[domain] for diff in diffs])
            cells.append(f"{mean:+.1f} ± {std:.1f}")
        per_seed = [statistics.mean(diff.values()) for diff in diffs]
        mean, std = mean_std(per_seed)
        cells.append(f"{mean:+.1f} ± {std:.1f}")
        lines.append(
            f"| {label} | {' | '.join(cells)} | {', '.join(f'{v:+.1f}' for v in per_seed)} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def draw_figure(results, domains, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("static alone", "static joint", "DCSD joint (S+D+C)")
    colours = ("#9e9e9e", "#4a7fb5", "#d9822b")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(shown)
    top = 0.0
    for index, (name, colour) in enumerate(zip(shown, colours, strict=True)):
        stats = [mean_std([m[d]["mAP"] for m in results[name]]) for d in domains]
        positions = [i + (index - 1) * width for i in range(len(domains))]
        ax.bar(
            positions,
            [s[0] for s in stats],
            width,
            yerr=[s[1] for s in stats],
            capsize=3,
            color=colour,
            label=name,
        )
        top = max(top, *(mean + std for mean, std in stats))
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel("test mAP (%)")
    seeds = len(results[shown[0]])
    ax.set_title(f"Synthetic domain conflict: mean ± std over {seeds} seeds")
    ax.legend(loc="upper right", ncol=len(shown), fontsize=8)
    ax.set_ylim(0, top * 1.35)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None, description: str | None = None):
    """The benchmark's options (``argv``, else the command line) and what they imply: the
    ledger, the image size, the quick sizes, ``datasets`` and their cache label, the proxy
    pool's config and key, and the starts (``args.starts``: the start files under
    ``--proxy-root``, the ``--recorded-start`` ones by digest; ``args.versus_starts``: the
    other pretrainings ``--versus-start`` sets beside them). ``bench/factor_usage.py``
    names the same runs with the same options. Returns ``(args, datasets)``."""
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="joint epochs (30: static alone >= 50 mAP on every domain of the val split)",
    )
    parser.add_argument("--batch", type=int, nargs=2, default=[8, 4], metavar=("P", "K"))
    parser.add_argument("--data-seed", type=int, default=0, help="the synthetic data's seed")
    parser.add_argument(
        "--preset",
        choices=[name for name in PRESETS if name.startswith("conflict")],
        default="conflict_mild",
        help="the synthetic preset (dcsd.data.synthetic.PRESETS); conflict_mild, where the static "
        "rows learn (>= 50 mAP on val), chosen on the static rows and the val split",
    )
    parser.add_argument(
        "--test-ids",
        type=int,
        default=64,
        help="test identities per domain (the preset has 32; with 64 every seed std of the "
        "3-seed table stayed under 2 mAP)",
    )
    parser.add_argument(
        "--train-ids",
        type=int,
        default=64,
        help="identities per domain the models train on, in either split (64: with the preset's "
        "32 static alone stayed near 30 mAP); --split val draws --val-ids more and holds them out",
    )
    parser.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="val: held-out training identities (choose the schedule there, never on test)",
    )
    parser.add_argument(
        "--val-ids",
        type=int,
        default=64,
        help="held-out ids per domain (val); 64, as many as --test-ids: a smaller gallery's mAP "
        "did not transfer to the test split",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings side by side, each with the cores / --jobs threads: one call with every "
        "row, not several calls at once (they oversubscribe the cores)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="MINUTES",
        help="start no run after this many minutes and stop the running ones (they resume at "
        "the next call); the tables then hold the rows whose runs all finished (none without "
        "the static rows) and are printed, not appended to --results / --csv",
    )
    parser.add_argument(
        "--proxy-root", type=Path, default=Path("runs/proxy"), help="bench/pretrain_proxy.py's"
    )
    parser.add_argument(
        "--proxy-ids-per-domain",
        type=int,
        default=PoolConfig.ids_per_domain,
        help="the proxy pool's identities per domain (bench/pretrain_proxy.py's "
        "--ids-per-domain): another pool is another pretraining, whose runs the ledger keys "
        "apart",
    )
    which_rows = parser.add_mutually_exclusive_group()
    which_rows.add_argument(
        "--static-only", action="store_true", help="Table II's static rows only"
    )
    which_rows.add_argument(
        "--rows",
        nargs="+",
        metavar="KEY",
        help=f"these rows and the static ones (default: all): {', '.join(r.key for r in ROWS)}",
    )
    parser.add_argument(
        "--without-static",
        action="store_true",
        help="train the --rows alone, not the static rows: the report then has their tables "
        "and paired differences, none of the checks that read the static rows, and nothing is "
        "appended to --csv (its tables compare with the static rows)",
    )
    parser.add_argument(
        "--recorded-start",
        nargs="+",
        default=[],
        metavar="START=DIGEST",
        help="a proxy start known by its digest alone, say proxy_ddf=53134ea8 (a pretraining on "
        "another machine): the ledger's runs from it are read, none is trained, so rows with "
        "runs missing stay unfinished",
    )
    parser.add_argument(
        "--versus-start",
        nargs="+",
        default=[],
        metavar="START=DIGEST",
        help="another pretraining of START, known by its digest (say proxy_static=9c18ee32, "
        "pretrained on another CPU): every row from START is also read from the ledger's runs "
        "from it (none trained) and paired by seed with the row from this call's start",
    )
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 seed, 1 epoch (CI)")
    parser.add_argument("--root", type=Path, default=Path("runs/domain_conflict"))
    add_ledger_option(parser, LEDGER)
    parser.add_argument("--results", type=Path, help="append the tables here (bench/RESULTS.md)")
    parser.add_argument(
        "--csv", type=Path, help="append the mAP rows here (bench/bench_domain_conflict.csv)"
    )
    parser.add_argument("--figure", type=Path, help="write the bar chart here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    args.ledger = chosen_ledger(args, LEDGER)
    args.image_size = (64, 32)
    if args.quick:
        args.seeds, args.epochs, args.batch, args.image_size = args.seeds[:1], 1, (4, 2), (32, 16)
    datasets, args.data_label = make_datasets(args)
    args.proxy = (
        quick_config() if args.quick else PoolConfig(ids_per_domain=args.proxy_ids_per_domain)
    )
    args.proxy_key = args.proxy.key()
    args.starts = starts(args.proxy, args.proxy_root)
    args.recorded_starts = _start_digests(parser, "--recorded-start", args.recorded_start, args)
    args.versus_starts = _start_digests(parser, "--versus-start", args.versus_start, args)
    args.starts |= args.recorded_starts
    _check_versus_starts(parser, args)
    return args, datasets


def _check_versus_starts(parser, args) -> None:
    """The parser's error on a ``--versus-start`` whose start this call does not hold (not
    pretrained, not recorded: its digest is not known yet, and once pretrained it may be the
    very DIGEST) or whose DIGEST is this call's own pretraining of it."""
    for name, start in args.versus_starts.items():
        here = args.starts[name]
        if not isinstance(here, RecordedStart) and not is_pretrained(
            args.proxy, args.proxy_root, name
        ):
            parser.error(
                f"--versus-start {name}={start.digest}: {name} is not pretrained under "
                "--proxy-root, so this call's pretraining of it is not known yet; pretrain it "
                "first (bench/pretrain_proxy.py) or name it with --recorded-start"
            )
        if start_digest(here) == start.digest:
            parser.error(
                f"--versus-start {name}={start.digest} names this call's own pretraining of "
                f"{name}: give the digest of another one (the end of its runs' names in the ledger)"
            )


def _start_digests(parser, option: str, items: list[str], args) -> dict[str, RecordedStart]:
    """``{start: RecordedStart}`` of ``option``'s ``START=DIGEST`` items; the parser's error on
    an unknown start, a malformed digest or a start named twice."""
    found: dict[str, RecordedStart] = {}
    for item in items:
        name, _, digest = item.partition("=")
        if name not in args.starts or not is_digest(digest):
            parser.error(
                f"{option} {item}: give START=DIGEST, START among {list(args.starts)} "
                f"and DIGEST its {DIGEST_DIGITS} hex digits (the end of its runs' names in the "
                "ledger)"
            )
        if name in found:
            parser.error(f"{option} names {name} twice")
        found[name] = RecordedStart(digest)
    return found


def main() -> None:
    args, datasets = parse_args()
    rows = with_versus(
        select_rows(args.rows, args.static_only, args.without_static), args.versus_starts
    )
    names = {row.name for row in rows}
    domains = [d.name for d in datasets]
    device = torch.device(args.device)
    proxy_starts = args.starts
    inits = sorted({row.init for row in rows} - {""})
    for name in args.versus_starts:
        if name not in inits:
            print(f"--versus-start {name}: no row of this call starts from it")
    for name, start in args.recorded_starts.items():
        if name not in inits:
            print(f"--recorded-start {name}: no row of this call starts from it")
        elif is_pretrained(args.proxy, args.proxy_root, name):
            print(
                f"--recorded-start {name}: its runs are read by the digest {start.digest}, not by "
                "the start file under --proxy-root"
            )

    def not_pretrained() -> list[str]:
        return [
            name
            for name in inits
            if name not in args.recorded_starts
            and not is_pretrained(args.proxy, args.proxy_root, name)
        ]

    missing = not_pretrained()
    note_args = (args.ledger, device, args.proxy_key, args.versus_starts)
    if inits:
        print(
            start_note(inits, proxy_starts, missing, *note_args),
            flush=True,
        )
    threads = max(1, len(os.sched_getaffinity(0)) // args.jobs)
    results, runs, held = run_all(rows, datasets, args, device, proxy_starts, missing, threads)
    missing = not_pretrained()
    # A row from a --versus-start is only ever read: one the ledger lacks is left out, and the
    # output files wait for the rows a call can finish alone.
    unfinished = [row.name for row in rows if row.name not in results and not row.pretraining]
    if len(results) < len(rows):
        print(unfinished_note(rows, results, args, held), flush=True)
        if any(row.name in unfinished for row in STATIC_ROWS):
            print("no tables: every table and check reads the static rows")
            return
        rows = tuple(row for row in rows if row.name in results)
        names = {row.name for row in rows}

    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (f"CPU ({platform.processor() or platform.machine()})")
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M+00:00")
    regimes = "summer / winter / dusk"
    report = [
        "## Domain conflict in miniature (paper Tables II, V, VI)",
        "",
        f"- this call: {device_name}, {args.jobs} run(s) side by side, {threads} thread(s) "
        f"each; torch {torch.__version__}, triton {triton.__version__}; {stamp}",
        f"- the reported runs (trained by this call or read): {ran_with(runs)}",
        *([f"- {start_note(inits, proxy_starts, missing, *note_args)}"] if inits else []),
        f"- data: synthetic `{args.preset}` preset ({regimes}), data seed {args.data_seed}"
        + (", quick sizes" if args.quick else "")
        + (
            ""
            if args.quick
            else f", {args.train_ids} / {args.test_ids} train / test identities per domain"
        )
        + (f" ({args.val_ids} more held out)" if args.split == "val" else "")
        + f", {args.split} split"
        + f"; {args.epochs} epochs from the proxy-pretrained starts (pool of "
        f"{args.proxy.domains} x {args.proxy.ids_per_domain} identities, {args.proxy.epochs} "
        f"epochs, key {args.proxy_key}; "
        "per-domain models: as many iterations), "
        f"P x K = {args.batch[0]} x {args.batch[1]}, {args.image_size[0]}x{args.image_size[1]}; "
        f"seeds {args.seeds}",
        f"- command: `python bench/bench_domain_conflict.py {' '.join(sys.argv[1:])}`",
        "",
        f"### mAP (%), {args.split} split, mean ± std over seeds",
        "",
        table(rows, results, domains, "mAP"),
        "",
        "### rank-1 (%)",
        "",
        table(rows, results, domains, "rank1"),
        "",
    ]
    with_static = all(row in rows for row in STATIC_ROWS)
    if with_static:
        check, found = conflict_check(results, domains)
        regime, _ = regime_check(results, domains)
        report += [
            "### Domain conflict of the static model (alone vs joint)",
            "",
            check,
            "",
            f"Conflict present: {'yes' if found else 'no'}",
            "",
            regime,
            "",
        ]
    if len(args.seeds) > 1:
        spreads, small = spread_check(rows, results, domains)
        report += [
            "### Seed-to-seed std of mAP per domain (the issue asks for <= 2)",
            "",
            spreads,
            "",
            f"Every std <= 2: {'yes' if small else 'no'}",
            "",
        ]
    paired = paired_check(results, domains, rows)
    if paired:
        report += ["### Paired by seed: mAP differences (mean ± std over seeds)", "", paired, ""]
    if with_static and names.issuperset(GOAL_ROWS):
        report += [
            "### The goal (DCSD joint >= static joint and alone; S <= S+D, S+C <= S+D+C)",
            "",
            *goal_check(results, domains),
            "",
        ]
    text = "\n".join(report)
    print(text)
    if unfinished:  # the next call, with these rows finished, writes the whole tables
        print("rows unfinished: nothing appended to --results / --csv, no --figure")
        return
    if args.results:
        with args.results.open("a") as out:
            out.write("\n" + text + "\n")
    if args.csv and with_static:
        append_rows(args.csv, csv_rows(rows, results, domains, args))
    if args.figure and with_static and "DCSD joint (S+D+C)" in names:
        draw_figure(results, domains, args.figure)
        print(f"figure written to {args.figure}")


if __name__ == "__main__":
    main()
