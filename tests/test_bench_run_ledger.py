"""bench/run_ledger.py and its use by reid_runs: finished runs' results kept in a file beside the
code, so that a machine lost with its run folders loses no result; torn and bad lines, and
appends from processes side by side."""

import json
import multiprocessing
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_domain_conflict as bench  # noqa: E402
import reid_runs  # noqa: E402
from run_ledger import LedgerError, read_ledger, record_run  # noqa: E402

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


def _record_many(ledger: Path, worker: int) -> None:
    for index in range(25):
        record_run(ledger, f"w{worker}-{index}", _result(float(index)))


def test_processes_side_by_side_lose_no_record(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(ledger, w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    records = read_ledger(ledger)
    assert len(records) == 100 and len(ledger.read_text().splitlines()) == 100
    assert records["w3-24"] == _result(24.0)


def test_a_run_whose_folder_is_lost_is_read_from_the_ledger(tmp_path, monkeypatch):
    """A finished run's result is recorded when it is read from its folder; with the folder
    gone (a new machine) the same run is read from the ledger and not trained again, while a
    run from a start pretrained again (another digest) is not read from it."""
    args = bench.argparse.Namespace(
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
    with reid_runs.torch.no_grad():
        model.bn1.weight.add_(1.0)
    save_model(model, starts["proxy_static"])  # pretrained again: other weights, other runs
    assert reid_runs.cached_result(spec, datasets, root, starts, ledger) is None
