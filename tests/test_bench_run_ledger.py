"""bench/run_ledger.py and its use by reid_runs: finished runs' results kept in a file beside the
code, so that a machine lost with its run folders loses no result; torn and bad lines, appends
from processes side by side, and records kept apart by the device type they ran on."""

import argparse
import json
import multiprocessing
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_domain_conflict as bench  # noqa: E402
import reid_runs  # noqa: E402
from run_ledger import LedgerError, chosen_ledger, read_ledger, record_run  # noqa: E402

from dcsd.data import MultiDomainDataset  # noqa: E402
from dcsd.models import save_model  # noqa: E402


def _result(value: float) -> dict:
    return {"metrics": {"synth0": {"mAP": value, "rank1": value + 1}}, "seconds": 1.5}


def test_records_are_read_back_once_each(tmp_path):
    ledger = tmp_path / "sub" / "runs.jsonl"
    assert read_ledger(ledger) == {}
    assert record_run(ledger, "a-1", _result(10.0))
    assert record_run(ledger, "b-2", _result(20.0))
    assert not record_run(ledger, "a-1", _result(99.0))  # recorded already: kept as it was
    assert read_ledger(ledger) == {"a-1": _result(10.0), "b-2": _result(20.0)}
    lines = ledger.read_text().splitlines()
    assert [json.loads(line)["run"] for line in lines] == ["a-1", "b-2"]


def test_a_torn_last_line_is_ignored_and_dropped_by_the_next_record(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    record_run(ledger, "a-1", _result(10.0))
    with ledger.open("a") as handle:
        handle.write('{"run": "b-2", "res')  # a machine stopped mid-write
    assert read_ledger(ledger) == {"a-1": _result(10.0)}
    record_run(ledger, "c-3", _result(30.0))
    assert read_ledger(ledger) == {"a-1": _result(10.0), "c-3": _result(30.0)}
    assert '"b-2"' not in ledger.read_text()


def test_a_bad_line_is_named_with_its_file_and_number(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    record_run(ledger, "a-1", _result(10.0))
    with ledger.open("a") as handle:
        handle.write('{"name": "b-2"}\n')
    record_run(ledger, "c-3", _result(30.0))
    with pytest.raises(LedgerError, match=rf"{ledger}:2: not a run record"):
        read_ledger(ledger)


def test_processes_side_by_side_record_each_run_once(tmp_path):
    """Four processes, started together, record the same 200 runs in the same order (they race
    for every one): each run is written on exactly one line."""
    ledger = tmp_path / "runs.jsonl"
    context = multiprocessing.get_context("fork")  # children that need no imports of their own
    go = context.Event()

    def record_all():
        go.wait(60)
        for index in range(200):
            record_run(ledger, f"n{index}", _result(float(index)))

    workers = [context.Process(target=record_all) for _ in range(4)]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * 4
    names = [json.loads(line)["run"] for line in ledger.read_text().splitlines()]
    assert sorted(names) == sorted(f"n{index}" for index in range(200))
    assert read_ledger(ledger)["n199"] == _result(199.0)


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    ledger.write_text(json.dumps({"run": "a-1", "result": _result(10.0)}))  # a hand edit
    assert read_ledger(ledger) == {"a-1": _result(10.0)}
    record_run(ledger, "b-2", _result(20.0))
    assert read_ledger(ledger) == {"a-1": _result(10.0), "b-2": _result(20.0)}


def test_a_torn_line_after_other_text_is_cut_at_its_own_start(tmp_path):
    """The torn line is dropped at its byte offset, whatever the lines before it hold."""
    ledger = tmp_path / "runs.jsonl"
    first = json.dumps({"run": "a-1", "result": {"note": "µ×"}}, ensure_ascii=False) + "\n"
    ledger.write_bytes(first.encode() + b'{"run": "b-2", "res')
    record_run(ledger, "c-3", _result(30.0))
    assert read_ledger(ledger) == {"a-1": {"note": "µ×"}, "c-3": _result(30.0)}


def test_a_record_of_the_wrong_shape_is_named(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    ledger.write_text('{"run": ["a"], "result": {}}\n')
    with pytest.raises(LedgerError, match=r"runs.jsonl:1: not a run record .*must be a string"):
        read_ledger(ledger)
    ledger.write_text('{"run": "a", "result": null}\n[1]\n')
    with pytest.raises(LedgerError, match=r"runs.jsonl:1: .*\"result\" an object"):
        read_ledger(ledger)


def test_a_run_whose_folder_is_lost_is_read_from_the_ledger(tmp_path, monkeypatch):
    """A finished run's result is recorded when it is read from its folder; with the folder
    gone (a new machine) the same run is read from the ledger and not trained again, while a
    run from a start pretrained again (another digest) is not read from it."""
    args = argparse.Namespace(
        preset="conflict_mild", data_seed=0, image_size=(16, 8), quick=False, split="test",
        train_ids=6, val_ids=3, test_ids=4,
    )  # fmt: skip
    datasets = bench.make_datasets(args)[0][:1]
    spec = reid_runs.RunSpec(model="resnet50_reid", domains=("synth0",), init="proxy_static@k")
    starts = {"proxy_static": tmp_path / "start"}
    model = reid_runs.build_model(spec, MultiDomainDataset(datasets))
    save_model(model, starts["proxy_static"])
    root, ledger = tmp_path / "runs", tmp_path / "runs.jsonl"
    folder = reid_runs.run_folder(spec, model, root, starts)
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(_result(42.0)))
    assert (
        reid_runs.cached_result(spec, datasets, root, starts, ledger)["metrics"]
        == (_result(42.0)["metrics"])
    )
    assert list(read_ledger(ledger)) == [folder.name]

    # as it was read from the folder (runs cached before the result recorded these lack them)
    recorded = {**_result(42.0), "resumed_at_epoch": None, "train_loss": None}
    (folder / "result.json").unlink()  # the machine is gone: the ledger is all there is

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr(reid_runs, "Trainer", no_training)
    assert reid_runs.cached_result(spec, datasets, root, starts, ledger) == recorded
    assert reid_runs.run(spec, datasets, root, "cpu", starts=starts, ledger=ledger) == recorded
    assert reid_runs.cached_result(spec, datasets, root, starts) is None  # no ledger given
    # a run recorded on a GPU (bf16) is not read for the CPU (float32), nor the other way
    assert reid_runs.cached_result(spec, datasets, root, starts, ledger, "cuda") is None
    gpu_ledger = tmp_path / "gpu.jsonl"
    record_run(gpu_ledger, folder.name, {**recorded, "ran_with": {"device": "cuda:0"}})
    assert reid_runs.cached_result(spec, datasets, root, starts, gpu_ledger) is None
    assert reid_runs.cached_result(spec, datasets, root, starts, gpu_ledger, "cuda")
    with reid_runs.torch.no_grad():
        model.bn1.weight.add_(1.0)
    save_model(model, starts["proxy_static"])  # pretrained again: other weights, other runs
    assert reid_runs.cached_result(spec, datasets, root, starts, ledger) is None


def test_the_committed_ledger_is_the_default_except_for_smoke_runs(tmp_path):
    committed, mine = tmp_path / "committed.jsonl", tmp_path / "mine.jsonl"

    def chosen(ledger, quick):
        return chosen_ledger(argparse.Namespace(ledger=ledger, quick=quick), committed)

    assert chosen(None, quick=False) == committed
    assert chosen(None, quick=True) is None
    assert chosen(mine, quick=False) == mine and chosen(mine, quick=True) == mine
