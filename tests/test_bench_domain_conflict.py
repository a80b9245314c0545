"""The domain-conflict benchmark: the identities its splits draw, and a smoke test (tiny data, 1
seed, 1 epoch): the proxy starts are pretrained, every row trains from its start (two at a
time), the tables, the checks and the figure are written, a second call trains nothing, and one
past its deadline stops; the static depthwise control row starts from its own depthwise
filters."""

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_domain_conflict as bench  # noqa: E402
from pretrain_proxy import PoolConfig  # noqa: E402
from reid_runs import (  # noqa: E402
    RecordedStart,
    RunSpec,
    apply_start,
    build_model,
    cached_result,
    run_folder,
)

from dcsd.data import MultiDomainDataset  # noqa: E402
from dcsd.engine import RunLock, TrainConfig, build_optimizer  # noqa: E402
from dcsd.engine.optim import optimizer_settings  # noqa: E402
from dcsd.models import save_model  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_domain_conflict.py"
USAGE = SCRIPT.with_name("factor_usage.py")


def run(tmp_path, *args, script=SCRIPT):
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--device", "cpu", "--root", tmp_path / "runs",
         "--proxy-root", tmp_path / "proxy", *map(str, args)],
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_quick_benchmark_writes_tables_and_figure_and_resumes(tmp_path):
    results, figure = tmp_path / "RESULTS.md", tmp_path / "conflict.png"
    committed = bench.LEDGER.read_bytes() if bench.LEDGER.exists() else None
    out = run(tmp_path, "--results", results, "--figure", figure, "--jobs", "2")
    # --quick records nothing in the committed ledger
    assert (bench.LEDGER.read_bytes() if bench.LEDGER.exists() else None) == committed
    for row in (
        "static alone",
        "static joint",
        "static depthwise joint (control)",
        "DCSD alone",
        "DCSD joint (S+D+C)",
        "| S |",
        "| S+D |",
        "| S+C |",
        "S+D+C, no stop gradient",
        "DCSD joint, static start",
        "DCSD alone, scratch",
        "spatial branch reads X + D + Cam",
        "S+D+C, domain/camera losses reach the backbone",
        "DCSD joint, scratch, gate layer",
        "DCSD alone, scratch, gate layer",
        "gate layer, generators without weight decay",
    ):
        assert row in out
    assert "| synth0 | synth1 | synth2 | mean |" in out
    assert "Conflict present:" in out and "DCSD joint" in out and "<= S+D" in out
    assert "Static alone >= 50 mAP on every domain:" in out
    # The starts: static and static depthwise model folders (read by the benchmark's apply_start)
    # and a DDF-layout checkpoint (loaded through load_ddf_backbone, as a user loads DDF's file).
    assert len(list((tmp_path / "proxy").glob("*/static/model.safetensors"))) == 1
    assert len(list((tmp_path / "proxy").glob("*/static_dw/model.safetensors"))) == 1
    assert len(list((tmp_path / "proxy").glob("*/ddf_mul_resnet50_proxy.pth.tar"))) == 1
    assert figure.stat().st_size > 5000
    assert results.read_text().count("## Domain conflict in miniature") == 1
    # 13 joint rows + 5 per-domain rows of 3 domains, one seed: 28 cached runs.
    cached = list((tmp_path / "runs").glob("*/result.json"))
    assert len(cached) == 28
    ran_with = json.loads(cached[0].read_text())["ran_with"]
    # the cores shared among the 2 jobs, recorded with the result
    assert ran_with["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert ran_with["device"] == "cpu"
    capability = torch.backends.cpu.get_cpu_capability()
    assert ran_with["cpu"].endswith(f", {capability}")  # the CPU's model, then its capability
    assert (
        f"- the reported runs (trained by this call or read): 28 on cpu ({ran_with['cpu']}), "
        f"{ran_with['threads']} thread(s), torch {torch.__version__}"
    ) in results.read_text()
    digests = {
        name: hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        for name, path in (
            ("proxy_ddf", next((tmp_path / "proxy").glob("*/ddf_mul_resnet50_proxy.pth.tar"))),
            ("proxy_static", next((tmp_path / "proxy").glob("*/static/model.safetensors"))),
        )
    }
    # --quick keeps no ledger: before training, the starts to pretrain; the report, their
    # digests, which their summaries record too.
    assert out.startswith("proxy starts: proxy_ddf not pretrained yet; ")
    for name, digest in digests.items():
        assert f"{name} {digest}" in results.read_text()
        summary = next((tmp_path / "proxy").glob(f"*/{name.removeprefix('proxy_')}.json"))
        assert json.loads(summary.read_text())["digest"] == digest
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    # bench/factor_usage.py reads the joint DCSD runs these options name, trains nothing, and
    # names the command that trains a run it cannot find.
    usage = tmp_path / "usage.md"
    out = run(tmp_path, "--rows", "dcsd_joint", "s", "dcsd_alone", "--results", usage, script=USAGE)
    assert "#### DCSD joint (S+D+C) (1 seed(s))" in out and "#### S (1 seed(s))" in out
    assert "- left out (not joint DCSD rows): dcsd_alone" in out
    assert out.count("| layer4.2.conv2 |") == 2 and "**mean over the layers**" in out
    assert usage.read_text().strip() == out.strip()
    missing = subprocess.run(
        [sys.executable, str(USAGE), "--quick", "--rows", "sd", "--root", str(tmp_path / "no"),
         "--proxy-root", str(tmp_path / "proxy")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "sd, seed 0: no finished run with checkpoints in" in missing.stderr
    assert "python bench/bench_domain_conflict.py --rows sd" in missing.stderr
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps
    again = run(tmp_path, "--static-only")
    assert "static joint" in again and "DCSD joint" not in again.split("Conflict present")[0]
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # nothing trained again
    # --versus-start: the other pretraining's rows are only read (none here: named, left out)
    # and the tables of this pretraining's rows are printed whole.
    beside = run(tmp_path, "--static-only", "--versus-start", "proxy_static=0ddba11e")
    assert (
        "rows ['static alone [0ddba11e]', 'static joint [0ddba11e]'] (--versus-start) are read"
    ) in beside
    assert "| static joint | II |" in beside and "rows unfinished" not in beside
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps
    # --rows: the static rows and the rows named, from the cache; an unknown key is named.
    out = run(tmp_path, "--rows", "spatial_dc")
    table = out.split("Conflict present")[0]
    assert "static alone" in table and "X + D + Cam" in table and "DCSD alone" not in table
    assert "### The goal" not in out
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps
    # --deadline: cached runs are read, not queued; no run starts after it. Without the static
    # rows there is no table; with them, the finished rows are printed and nothing appended.
    assert "| static joint |" in run(tmp_path, "--static-only", "--deadline", "0")
    out = run(tmp_path, "--static-only", "--deadline", "0", "--root", tmp_path / "fresh")
    assert "stopped at the deadline (0 min): rows ['static alone', 'static joint']" in out
    assert "no tables" in out and "### mAP" not in out
    spatial = [p for p in cached if "spatial_information" in p.read_text()]
    assert len(spatial) == 1
    spatial[0].unlink()
    # A run another call is training (its run lock held) is passed over; the call goes on and
    # reports the others, then says why the row is unfinished.
    lock = RunLock(spatial[0].parent / "train")
    lock.acquire()
    try:
        out = run(tmp_path, "--rows", "spatial_dc")
    finally:
        lock.release()
    assert (
        f"spatial branch reads X + D + Cam (synth0, synth1, synth2) passed over: {lock.folder}"
        in out
    )
    assert (
        "rows ['S+D+C, spatial branch reads X + D + Cam'] have runs another call is training ("
        f"{lock.folder} is in use by another run (pid {os.getpid()} "
    ) in out
    assert "| static joint |" in out and "X + D + Cam |" not in out
    assert not spatial[0].exists()
    more = tmp_path / "more.md"
    out = run(tmp_path, "--rows", "spatial_dc", "--deadline", "0", "--results", more)
    assert "rows ['S+D+C, spatial branch reads X + D + Cam'] unfinished" in out
    assert "| static joint |" in out and "X + D + Cam |" not in out
    assert "nothing appended" in out and not more.exists()
    # --without-static: the rows named alone, from the cache; their paired differences, no
    # check that reads the static rows, nothing appended to the CSV.
    csv = tmp_path / "rows.csv"
    out = run(tmp_path, "--rows", "s", "sd", "--without-static", "--csv", csv)
    table = out.split("### rank-1")[0]
    assert "| S |" in table and "| S+D |" in table and "| static" not in table
    assert "| S+D − S |" in out and "Conflict present" not in out and "### The goal" not in out
    assert not csv.exists()
    assert {p: p.stat().st_mtime_ns for p in cached if p.exists()} == {
        p: t for p, t in stamps.items() if p.exists()
    }
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--rows", "dcsd_jiont"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0 and "no row ['dcsd_jiont']" in bad.stderr


def test_static_only_and_rows_are_refused_together(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--static-only", "--rows", "spatial_dc"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--rows: not allowed with argument --static-only" in result.stderr


def _sizes_args(split, train_ids=6, val_ids=3):
    return argparse.Namespace(
        preset="conflict_mild",
        data_seed=0,
        image_size=(16, 8),
        quick=False,
        split=split,
        train_ids=train_ids,
        val_ids=val_ids,
        test_ids=4,
    )


def test_train_ids_counts_the_identities_trained_on_in_either_split():
    """--train-ids N trains on N identities per domain on the test and the val split; val holds
    out --val-ids more, and names the drawn total in its cache label as before."""
    test_sets, test_label = bench.make_datasets(_sizes_args("test"))
    val_sets, val_label = bench.make_datasets(_sizes_args("val"))
    drawn_sets, drawn_label = bench.make_datasets(_sizes_args("test", train_ids=9))
    for test, val, drawn in zip(test_sets, val_sets, drawn_sets, strict=True):
        assert len({pid for _, pid, _ in test.train}) == 6
        assert len({pid for _, pid, _ in val.train}) == 6
        held_out = {pid for _, pid, _ in val.query} | {pid for _, pid, _ in val.gallery}
        assert len(held_out) == 3
        assert held_out <= {pid for _, pid, _ in drawn.train}
    assert val_label == drawn_label + ", 3 val ids/domain"
    assert test_label == "conflict_mild preset, data seed 0, 4 test ids, 6 train ids"


def _row_args() -> argparse.Namespace:
    """What :func:`bench.row_runs` reads of the options: one tiny epoch, test split."""
    return argparse.Namespace(
        epochs=1, batch=(2, 2), image_size=(16, 8), split="test", data_label="x", proxy_key="k"
    )


def test_static_depthwise_row_starts_from_its_own_depthwise_weights(tmp_path):
    """The control row builds the depthwise static model and its start loads every backbone
    tensor of the saved depthwise network, the depthwise 3x3 filters included."""
    datasets, _ = bench.make_datasets(_sizes_args("test"))
    args = _row_args()
    row = next(r for r in bench.ROWS if r.key == "static_dw_joint")
    ((spec, group),) = bench.row_runs(row, datasets, args, seed=0)
    assert spec.tweaks == ("depthwise",) and spec.init == "proxy_static_dw@k"
    data = MultiDomainDataset(group)
    saved = build_model(spec, data)
    with torch.no_grad():
        for parameter in saved.parameters():
            parameter.normal_()
    save_model(saved, tmp_path / "static_dw")
    model = build_model(spec, data)
    conv2 = model.layer1[0].conv2
    assert conv2.groups == conv2.in_channels  # depthwise
    start = spec.init.split("@")[0]
    report = apply_start(model, start, {start: tmp_path / "static_dw"})
    assert "layer1.0.conv2.weight" in report.loaded
    assert not [key for key in report.fresh if key.startswith(("conv1", "bn1", "layer"))]
    torch.testing.assert_close(conv2.weight, saved.layer1[0].conv2.weight)


def test_the_gate_row_without_decay_trains_its_gates_without_weight_decay():
    """The row's training override reaches the run: its key differs from the gate row's, and
    the optimizer built from its TrainConfig gives the channel gates' last layer no decay while
    the backbone keeps the benchmark's."""
    datasets, _ = bench.make_datasets(_sizes_args("test"))
    args = _row_args()
    rows = {r.key: r for r in bench.ROWS}
    ((spec, group),) = bench.row_runs(rows["dcsd_joint_gate_no_decay"], datasets, args, seed=0)
    ((gate_spec, _),) = bench.row_runs(rows["dcsd_joint_gate"], datasets, args, seed=0)
    assert spec.train == {"generator_weight_decay": 0.0} and gate_spec.train == {}
    assert spec.key() != gate_spec.key()
    model = build_model(spec, MultiDomainDataset(group))
    config = TrainConfig(**spec.train)
    decay = {
        id(p): g["weight_decay"]
        for g in build_optimizer(model, **optimizer_settings(config)).param_groups
        for p in g["params"]
    }
    conv2 = model.layer1[0].conv2
    assert decay[id(conv2.channel_branch[-1].weight)] == 0.0
    assert (
        decay[id(conv2.static_filter)] == decay[id(model.conv1.weight)] == config.weight_decay > 0
    )


def test_without_static_selects_the_rows_named_alone():
    rows = bench.select_rows(["sd", "s"], static_only=False, without_static=True)
    assert [row.key for row in rows] == ["s", "sd"]  # table order
    assert bench.STATIC_ROWS[0] in bench.select_rows(["s"], static_only=False)
    with pytest.raises(SystemExit, match="--without-static needs --rows"):
        bench.select_rows(None, static_only=False, without_static=True)


def test_the_report_says_what_its_runs_ran_with():
    def result(seconds, setup=None, resumed=0):
        return {"seconds": seconds, "resumed_at_epoch": resumed} | (
            {"ran_with": setup} if setup else {}
        )

    cpu = {"device": "cpu", "threads": 1, "torch": "2.9", "triton": "3.5"}
    gpu = {"device": "cuda:0", "threads": 16, "torch": "2.9", "triton": "3.5"}
    runs = [result(500.4, cpu), result(610.0, cpu), result(12.0, cpu, resumed=80)]
    runs += [result(90.0, gpu), {"seconds": 700.0, "resumed_at_epoch": None}]
    assert bench.ran_with(runs) == (
        "3 on cpu, 1 thread(s), torch 2.9, triton 3.5; "
        "1 on cuda:0, 16 thread(s), torch 2.9, triton 3.5; "
        "1 on cpu, threads and versions not recorded; 90-700 s a run (1 resumed run(s) left out)"
    )
    assert bench.ran_with([result(12.0, cpu, resumed=3)]) == (
        "1 on cpu, 1 thread(s), torch 2.9, triton 3.5 (1 resumed run(s) left out)"
    )
    # Runs recorded with the CPU's model and instruction set are told apart by them.
    avx512 = cpu | {"cpu": "Xeon, AVX512"}
    assert bench.ran_with([result(500.0, avx512), result(600.0, cpu)]) == (
        "1 on cpu (Xeon, AVX512), 1 thread(s), torch 2.9, triton 3.5; "
        "1 on cpu, 1 thread(s), torch 2.9, triton 3.5; 500-600 s a run"
    )


def test_the_start_note_counts_the_ledgers_runs_per_pretraining(tmp_path):
    """Runs recorded from another pretraining of a start (another digest) are named before
    any training, with how to read them; runs from this one are counted; runs on another
    device type (never read here), from another proxy pool (another experiment) and names that
    end in no digest are not counted."""
    start = tmp_path / "ddf.pth.tar"
    start.write_bytes(b"weights pretrained here")
    here = hashlib.sha256(b"weights pretrained here").hexdigest()[:8]
    ledger = tmp_path / "runs.jsonl"
    cpu = torch.device("cpu")

    def record(name, init, device="cpu"):
        spec = {"init": init} if init else {}
        result = {"spec": spec, "metrics": {}, "ran_with": {"device": device}}
        return json.dumps({"run": name, "result": result})

    ledger.write_text(
        "\n".join(
            [
                record("aaaa-11111111-0badc0de", "proxy_ddf@k"),
                record("bbbb-11111111-0badc0de", "proxy_ddf@k"),
                record(f"cccc-11111111-{here}", "proxy_ddf@k"),
                record("ffff-11111111-0badc0de", "proxy_ddf@k", device="cuda:0"),
                record("gggg", "proxy_ddf@k"),  # no digest at the end of the name
                record("dddd", ""),  # from scratch: no start
                record("eeee-9999aaaa", "proxy_static@k"),
                record("hhhh-11111111-5ca1ab1e", "proxy_ddf@j"),  # another proxy pool
            ]
        )
        + "\n"
    )
    starts = {"proxy_ddf": start}
    note = bench.start_note(["proxy_ddf"], starts, [], ledger, cpu, "k")
    assert note.startswith(
        f"proxy starts: proxy_ddf {here} (the ledger: 2 run(s) from 0badc0de, "
        "1 run(s) from this pretraining). "
    )
    assert "copy that machine's --proxy-root here" in note and "this CPU: " in note
    assert "9999aaaa" not in note  # a start this call does not use
    assert "5ca1ab1e" not in note  # the start pretrained on another pool
    other_pool = bench.start_note(["proxy_ddf"], starts, [], ledger, cpu, "j")
    assert other_pool.startswith(
        f"proxy starts: proxy_ddf {here} (the ledger: 1 run(s) from 5ca1ab1e). "
    )
    on_gpu = bench.start_note(["proxy_ddf"], starts, [], ledger, torch.device("cuda"), "k")
    assert on_gpu.startswith(f"proxy starts: proxy_ddf {here} (the ledger: 1 run(s) from 0badc0de)")
    assert "this device: cuda" in on_gpu
    missing = bench.start_note(["proxy_ddf"], starts, ["proxy_ddf"], ledger, cpu, "k")
    assert missing.startswith(
        f"proxy starts: proxy_ddf not pretrained yet (the ledger: 2 run(s) from 0badc0de, "
        f"1 run(s) from {here}). "
    )
    recorded = bench.start_note(
        ["proxy_ddf"], {"proxy_ddf": RecordedStart(here)}, [], ledger, cpu, "k"
    )
    assert recorded.startswith(
        f"proxy starts: proxy_ddf {here} (--recorded-start: its runs are read, none trained; "
        f"the ledger: 2 run(s) from 0badc0de, 1 run(s) from it). "
    )
    beside = bench.start_note(
        ["proxy_ddf"], starts, [], ledger, cpu, "k", {"proxy_ddf": RecordedStart("0badc0de")}
    )
    assert beside == (
        f"proxy starts: proxy_ddf {here} (the ledger: 2 run(s) from 0badc0de (--versus-start: "
        "the rows [0badc0de]), 1 run(s) from this pretraining)"
    )  # read beside this pretraining's: no advice on how to read them
    ledger.write_text(record(f"cccc-11111111-{here}", "proxy_ddf@k") + "\n")
    both = starts | {"proxy_static": start}
    only_here = bench.start_note(["proxy_ddf", "proxy_static"], both, [], ledger, cpu, "k")
    assert only_here == (
        f"proxy starts: proxy_ddf {here} (the ledger: 1 run(s) from this pretraining); "
        f"proxy_static {here}"
    )
    alone = bench.start_note(["proxy_ddf"], starts, [], None, cpu, "k")
    assert alone == f"proxy starts: proxy_ddf {here}"


def test_rows_left_unfinished_say_why():
    """A row stopped at the deadline continues with the same command; a row whose runs from a
    --recorded-start the ledger lacks needs the start file (also with no deadline)."""
    by_key = {row.key: row for row in bench.select_rows(["s", "dcsd_joint_scratch"], False, True)}
    s_row, scratch = by_key["s"], by_key["dcsd_joint_scratch"]
    args = argparse.Namespace(deadline=None, recorded_starts={"proxy_ddf": RecordedStart("0" * 8)})
    needs_file = (
        "rows ['S'] have runs the ledger does not hold from their --recorded-start, which this "
        "machine cannot train: that needs the start file"
    )
    assert bench.unfinished_note([s_row], {}, args) == needs_file + "; no row finished"
    args.deadline = 5
    stopped = (
        "stopped at the deadline (5 min): rows ['DCSD joint, scratch'] unfinished; the same "
        "command continues them (finished runs are cached, stopped ones resume from their last "
        "checkpoint)"
    )
    assert bench.unfinished_note([s_row, scratch], {"S": []}, args) == stopped
    assert bench.unfinished_note([s_row, scratch], {}, args) == (
        f"{stopped}; {needs_file}; no row finished"
    )
    # A row from a --versus-start is only read: its own clause, even with no deadline.
    beside = replace(scratch, name="S [0ddba11e]", init="proxy_ddf", pretraining="0ddba11e")
    assert bench.unfinished_note(
        [beside], {}, argparse.Namespace(deadline=None, recorded_starts={})
    ) == (
        "rows ['S [0ddba11e]'] (--versus-start) are read, never trained, and the ledger lacks "
        "some of their runs: left out, with their comparisons; no row finished"
    )
    held = "runs/x is in use by another run (pid 7 on host h, since then)"
    assert bench.unfinished_note([s_row, scratch], {}, args, {"DCSD joint, scratch": held}) == (
        f"rows ['DCSD joint, scratch'] have runs another call is training ({held}): the same "
        f"command, once that call ends, reads them from the cache; {needs_file}; no row finished"
    )


def _seed(d0: float, d1: float) -> dict[str, dict[str, float]]:
    """One seed's result of a row on the two domains ``d0`` and ``d1``: their mAP."""
    return {"d0": {"mAP": d0}, "d1": {"mAP": d1}}


def test_paired_differences_are_per_seed_then_averaged():
    results = {
        "S": [_seed(40.0, 50.0), _seed(42.0, 46.0)],
        "S+D": [_seed(41.0, 53.0), _seed(40.0, 46.0)],
        "static joint": [_seed(1.0, 1.0), _seed(1.0, 1.0)],
    }
    text = bench.paired_check(results, ["d0", "d1"])
    # S+D - S: d0 +1, -2 (mean -0.5, std 2.1); d1 +3, 0 (+1.5, 2.1); seeds +2.0, -1.0.
    assert "| S+D − S | -0.5 ± 2.1 | +1.5 ± 2.1 | +0.5 ± 2.1 | +2.0, -1.0 |" in text
    assert "static joint" not in text  # no DCSD joint row to pair it with
    assert bench.paired_check({"S": results["S"]}, ["d0", "d1"]) == ""
    # DCSD's own conflict, beside the static one: its per-domain row minus its joint row.
    own = bench.paired_check(
        {"DCSD alone": results["S+D"], "DCSD joint (S+D+C)": results["S"]}, ["d0", "d1"]
    )
    assert "| DCSD alone − DCSD joint (S+D+C) | -0.5 ± 2.1 | +1.5 ± 2.1 |" in own
    # The spatial branch on X + D + Cam against the default, which reads X alone.
    spatial = bench.paired_check(
        {
            "S+D+C, spatial branch reads X + D + Cam": results["S+D"],
            "DCSD joint (S+D+C)": results["S"],
        },
        ["d0", "d1"],
    )
    assert (
        "| S+D+C, spatial branch reads X + D + Cam − DCSD joint (S+D+C) | -0.5 ± 2.1 |" in spatial
    )


def test_the_conflicts_are_compared_paired_by_seed():
    """DCSD's conflict (alone minus joint) minus the static model's, per seed, then averaged."""
    results = {
        "static alone": [_seed(60.0, 50.0), _seed(62.0, 52.0)],
        "static joint": [_seed(50.0, 40.0), _seed(50.0, 44.0)],
        "DCSD alone": [_seed(58.0, 51.0), _seed(61.0, 50.0)],
        "DCSD joint (S+D+C)": [_seed(51.0, 40.0), _seed(49.0, 45.0)],
    }
    text = bench.paired_check(results, ["d0", "d1"])
    # Static's conflict: d0 10, 12; d1 10, 8. DCSD's: d0 7, 12; d1 11, 5.
    # DCSD's minus static's: d0 -3, 0 (-1.5 ± 2.1); d1 +1, -3 (-1.0 ± 2.8); seeds -1.0, -1.5
    # (mean -1.25, printed -1.2: Python rounds half to even).
    assert (
        "| (DCSD alone − DCSD joint (S+D+C)) − (static alone − static joint) "
        "| -1.5 ± 2.1 | -1.0 ± 2.8 | -1.2 ± 0.4 | -1.0, -1.5 |"
    ) in text
    del results["static joint"]  # a conflict needs both of its rows
    assert "(static alone − static joint)" not in bench.paired_check(results, ["d0", "d1"])


def test_a_start_pretrained_again_gets_runs_of_its_own(tmp_path):
    """Runs from a proxy start are cached under the start's digest: a start pretrained again
    (other weights) neither reads nor resumes the runs of the one before."""
    datasets, _ = bench.make_datasets(_sizes_args("test"))
    spec = RunSpec(model="resnet50_reid", domains=("synth0",), init="proxy_static@k")
    starts = {"proxy_static": tmp_path / "start"}
    assert cached_result(spec, datasets[:1], tmp_path / "runs", starts) is None  # no start yet
    model = build_model(spec, MultiDomainDataset(datasets[:1]))
    save_model(model, starts["proxy_static"])
    folder = run_folder(spec, model, tmp_path / "runs", starts)
    folder.mkdir(parents=True)
    (folder / "result.json").write_text('{"metrics": {"synth0": {"mAP": 1.0, "rank1": 2.0}}}')
    cached = cached_result(spec, datasets[:1], tmp_path / "runs", starts)
    assert cached["metrics"] == {"synth0": {"mAP": 1.0, "rank1": 2.0}}
    with torch.no_grad():
        model.bn1.weight.add_(1.0)
    save_model(model, starts["proxy_static"])  # pretrained again: other weights
    assert run_folder(spec, model, tmp_path / "runs", starts) != folder
    assert cached_result(spec, datasets[:1], tmp_path / "runs", starts) is None
    with pytest.raises(ValueError, match="unknown start 'proxy_static'"):
        run_folder(spec, model, tmp_path / "runs", {})


def test_a_recorded_start_reads_its_runs_and_trains_none(tmp_path):
    """--recorded-start START=DIGEST names a start by its digest alone (its file is on another
    machine): the ledger's runs from it are read, a missing one is left out, never queued, and
    nothing can be trained from it."""
    ledger = tmp_path / "runs.jsonl"
    argv = ["--quick", "--rows", "s", "--without-static", "--root", str(tmp_path / "runs")]
    argv += ["--proxy-root", str(tmp_path / "proxy"), "--ledger", str(ledger)]
    args, datasets = bench.parse_args([*argv, "--recorded-start", "proxy_ddf=0badc0de"])
    assert args.starts["proxy_ddf"] == RecordedStart("0badc0de")
    assert args.starts["proxy_static"] == tmp_path / "proxy" / args.proxy_key / "static"
    rows = bench.select_rows(["s"], False, True)
    tasks, cached, _ = bench.plan(rows, datasets, args, torch.device("cpu"), args.starts, [])
    assert (tasks, cached) == ([], {})  # nothing recorded yet, nothing to train
    ((spec, group),) = bench.row_runs(rows[0], datasets, args, 0)
    folder = run_folder(spec, build_model(spec, MultiDomainDataset(group)), args.root, args.starts)
    assert folder.name.endswith("-0badc0de")
    metrics = {"synth0": {"mAP": 12.5, "rank1": 25.0}}
    ledger.write_text(json.dumps({"run": folder.name, "result": {"metrics": metrics}}) + "\n")
    tasks, cached, _ = bench.plan(rows, datasets, args, torch.device("cpu"), args.starts, [])
    assert tasks == [] and [result["metrics"] for result in cached.values()] == [metrics]
    with pytest.raises(ValueError, match="known by its digest 0badc0de alone"):
        apply_start(build_model(spec, MultiDomainDataset(group)), "proxy_ddf", args.starts)
    for bad in ("proxy_ddf=xyz", "ddf=0badc0de"):
        with pytest.raises(SystemExit):
            bench.parse_args([*argv, "--recorded-start", bad])


def test_a_versus_start_reads_another_pretraining_and_pairs_it_by_seed(tmp_path):
    """--versus-start START=DIGEST adds, after each row from START, the same row from that
    other pretraining: its runs are read from the ledger by the digest (none queued), it is
    paired by seed with the row from this call's start, and it is left out of the CSV; a
    digest of the start this call holds is refused."""
    ledger = tmp_path / "runs.jsonl"
    argv = ["--quick", "--rows", "s", "--without-static", "--root", str(tmp_path / "runs")]
    argv += ["--proxy-root", str(tmp_path / "proxy"), "--ledger", str(ledger)]
    argv += ["--recorded-start", "proxy_ddf=0badc0de"]
    args, datasets = bench.parse_args([*argv, "--versus-start", "proxy_ddf=0ddba11e"])
    assert args.versus_starts == {"proxy_ddf": RecordedStart("0ddba11e")}
    rows = bench.with_versus(bench.select_rows(["s"], False, True), args.versus_starts)
    assert [(row.name, row.pretraining) for row in rows] == [
        ("S", ""),
        ("S [0ddba11e]", "0ddba11e"),
    ]
    tasks, cached, names = bench.plan(rows, datasets, args, torch.device("cpu"), args.starts, [])
    assert (tasks, cached) == ([], {})  # nothing recorded, nothing trained from either
    records = []
    for row, mAP in zip(rows, (12.5, 10.0), strict=True):
        ((spec, group),) = bench.row_runs(row, datasets, args, 0)
        model = build_model(spec, MultiDomainDataset(group))
        folder = run_folder(spec, model, args.root, bench.row_starts(row, args.starts))
        assert folder.name.endswith(f"-{row.pretraining or '0badc0de'}")
        metrics = {"synth0": {"mAP": mAP, "rank1": 0.0}}
        records.append(json.dumps({"run": folder.name, "result": {"metrics": metrics}}))
    ledger.write_text("\n".join(records) + "\n")
    tasks, cached, names = bench.plan(rows, datasets, args, torch.device("cpu"), args.starts, [])
    assert tasks == []
    read = {row.name: cached[names[(row.name, 0)][0]]["metrics"] for row in rows}
    assert read == {"S": {"synth0": {"mAP": 12.5, "rank1": 0.0}}, "S [0ddba11e]": {
        "synth0": {"mAP": 10.0, "rank1": 0.0}}}  # fmt: skip
    text = bench.paired_check({name: [m] for name, m in read.items()}, ["synth0"], rows)
    assert "| S − S [0ddba11e] | +2.5 ± 0.0 | +2.5 ± 0.0 | +2.5 |" in text
    csv = bench.csv_rows(rows, {name: [m] for name, m in read.items()}, ["synth0"], args)
    assert [(line["row"], line["map_synth0"]) for line in csv] == [("S", "12.5")]


def test_a_versus_start_beside_a_start_file_is_never_trained(tmp_path, capsys):
    """Beside a start pretrained here, --versus-start queues the rows from this start only (the
    other pretraining's are read, none trained); it is refused for a start not pretrained yet
    (its digest is not known), for this call's own digest and for a malformed item."""
    argv = ["--quick", "--static-only", "--root", str(tmp_path / "runs")]
    argv += ["--proxy-root", str(tmp_path / "proxy"), "--ledger", str(tmp_path / "runs.jsonl")]
    with pytest.raises(SystemExit):
        bench.parse_args([*argv, "--versus-start", "proxy_static=0ddba11e"])
    assert "proxy_static is not pretrained under --proxy-root" in capsys.readouterr().err
    start = bench.parse_args(argv)[0].starts["proxy_static"]
    start.mkdir(parents=True)
    (start / "model.safetensors").write_bytes(b"weights")
    (start.parent / "static.json").write_text("{}")
    args, datasets = bench.parse_args([*argv, "--versus-start", "proxy_static=0ddba11e"])
    rows = bench.with_versus(bench.select_rows(None, True), args.versus_starts)
    assert [row.name for row in rows] == [
        "static alone", "static alone [0ddba11e]", "static joint", "static joint [0ddba11e]"
    ]  # fmt: skip
    tasks, cached, _ = bench.plan(rows, datasets, args, torch.device("cpu"), args.starts, [])
    assert cached == {} and tasks and all("[0ddba11e]" not in task.name for task in tasks)
    assert len(tasks) == len(datasets) + 1  # static alone per domain, static joint
    own = hashlib.sha256(b"weights").hexdigest()[:8]
    refusals = {
        f"proxy_static={own}": "names this call's own pretraining of proxy_static",
        "proxy_static=xyz": "give START=DIGEST",
        "proxy_static=0ddba11e proxy_static=0ddba11f": "--versus-start names proxy_static twice",
    }
    for bad, why in refusals.items():
        with pytest.raises(SystemExit):
            bench.parse_args([*argv, "--versus-start", *bad.split()])
        assert why in capsys.readouterr().err


def test_another_proxy_pool_is_another_pretraining(tmp_path):
    """--proxy-ids-per-domain picks the pool the starts pretrain on, as bench/pretrain_proxy.py's
    --ids-per-domain does: its key (so its start files and its runs' names) differs from the
    default pool's."""
    argv = ["--rows", "s", "--without-static", "--root", str(tmp_path / "runs")]
    argv += ["--proxy-root", str(tmp_path / "proxy"), "--train-ids", "6", "--test-ids", "4"]
    default, _ = bench.parse_args(argv)
    bigger, datasets = bench.parse_args([*argv, "--proxy-ids-per-domain", "200"])
    assert default.proxy == PoolConfig() and default.proxy_key == PoolConfig().key()
    assert bigger.proxy == PoolConfig(ids_per_domain=200)
    assert bigger.proxy_key != default.proxy_key
    assert bigger.starts["proxy_ddf"].parent.name == bigger.proxy_key
    row = next(r for r in bench.ROWS if r.key == "s")
    ((spec, _),) = bench.row_runs(row, datasets, bigger, seed=0)
    assert spec.init == f"proxy_ddf@{bigger.proxy_key}"


def test_a_later_layer_option_keeps_the_runs_it_does_not_change(tmp_path):
    """``detach_information_input`` came after runs were cached: the runs it does not change
    (set to the earlier behaviour, or on a layer with no domain or camera MLP) keep their
    folders; the runs it changes get folders of their own."""
    data = MultiDomainDataset(bench.make_datasets(_sizes_args("test"))[0])
    root = tmp_path / "runs"

    def folder(**layer_options):
        spec = RunSpec(model="resnet50_dcsd", model_kwargs={"filter_norm": "ddf", **layer_options})
        with torch.device("meta"):
            return run_folder(spec, build_model(spec, data), root)

    earlier = folder(detach_information_input=False)  # the layer as it was before the option
    assert folder() != earlier  # the default, detached, trains another model
    assert folder(factors=("sample",)) == folder(
        factors=("sample",), detach_information_input=False
    )
    assert folder(factors=("sample",)) != earlier
