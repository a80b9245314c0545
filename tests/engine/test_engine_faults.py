"""Fault injection: kills during checkpoint writes, flipped bytes, NaN / inf, used or bad output
folders, bad files and bad arguments. Each test counts what it tried and asserts on the count;
the module prints the tally (``pytest -s``) that the README's reliability section quotes.
"""

import json
import os
import random
import re
import signal
import socket
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import safetensors.torch
import test_engine_trainer
import torch
from PIL import Image

import dcsd
import dcsd.cli.extract as extract_command
import dcsd.cli.train as train_command
from dcsd.cli import build_parser
from dcsd.cli import main as dcsd_command
from dcsd.data import ImageDataset, Market1501, ReIDItem, check_images
from dcsd.engine import (
    ChecksumError,
    NonFiniteLossError,
    RunLock,
    RunLockedError,
    TrainConfig,
    Trainer,
    build_eval_splits,
    latest_checkpoint,
    load_latest_training_state,
    load_training_state,
    save_training_state,
)
from dcsd.engine import checkpoint as checkpoint_module
from dcsd.evaluate import pairwise_distance, rank_metrics
from dcsd.losses import DCSDLoss
from dcsd.manifest import write_manifest
from dcsd.models import pretrained as pretrained_module

TRIED: Counter = Counter()
tiny_data = test_engine_trainer.tiny_data
make_trainer = test_engine_trainer.make_trainer


@pytest.fixture(scope="module", autouse=True)
def tally():
    yield
    print(
        "\nfault injection: "
        + ", ".join(f"{count} {kind}" for kind, count in sorted(TRIED.items()))
        + f" ({sum(TRIED.values())} in all): nothing lost"
    )


class Filled(torch.nn.Module):
    """Weights of 1 MiB whose every value is the epoch, so a torn write cannot hide."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.from_numpy(np.full((512, 512), value, np.float32)))


def save_epoch(directory: Path, epoch: int) -> Path:
    state = {"epoch": epoch, "optimizer": {"step": torch.tensor(float(epoch))}}
    return save_training_state(directory, Filled(float(epoch)), state, keep=2)


def assert_whole(directory: Path) -> int:
    """latest names a checkpoint that verifies and holds its own epoch everywhere."""
    checkpoint = load_training_state(directory)
    assert bool((checkpoint.model_state["weight"] == checkpoint.epoch).all())
    assert float(checkpoint.training_state["optimizer"]["step"]) == checkpoint.epoch
    return checkpoint.epoch


def in_child(body) -> int:
    """Run ``body()`` in a forked child (torch already imported); returns its pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            torch.set_num_threads(1)  # no OpenMP pool in a forked child
            body()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def test_sigkill_at_drawn_moments_of_checkpoint_writes(tmp_path):
    save_epoch(tmp_path, 1)
    start = time.perf_counter()
    save_epoch(tmp_path, 2)
    write_seconds = time.perf_counter() - start
    rng = random.Random(0)
    kills, mid_write = 40, 0
    for _ in range(kills):
        last = assert_whole(tmp_path)

        def write_forever(last=last):
            epoch = last
            while True:
                epoch += 1
                save_epoch(tmp_path, epoch)

        pid = in_child(write_forever)
        time.sleep(rng.uniform(0.0, 3 * write_seconds))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        mid_write += any(tmp_path.glob(".staging-*"))
        assert assert_whole(tmp_path) >= last
        TRIED["kills (SIGKILL at a drawn moment)"] += 1
    assert kills == 40 and mid_write >= 10, f"only {mid_write} of {kills} kills hit a write"
    save_epoch(tmp_path, 100)
    assert not list(tmp_path.glob(".staging-*")), "stale staging folders must be removed"


def test_crash_before_every_step_of_a_checkpoint_write(tmp_path):
    """Die before each file-system step in turn (a file write dies halfway through)."""
    steps = (
        (pretrained_module.safetensors.torch, "save_file"),  # save_model's weights write
        (checkpoint_module.torch, "save"),
        (checkpoint_module, "write_manifest"),
        (checkpoint_module, "fsync_dir"),
        (checkpoint_module.os, "replace"),
        (checkpoint_module.shutil, "rmtree"),
    )
    save_epoch(tmp_path, 1)
    save_epoch(tmp_path, 2)
    crash_at, finished, outcomes = 1, False, set()
    while not finished:

        def crashing_save(crash_at=crash_at):
            calls = [0]

            def wrap(owner, name):
                real = getattr(owner, name)

                def step(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == crash_at:
                        if name in ("save_file", "save"):  # a torn write
                            real(*args, **kwargs)
                            target = Path(args[1])
                            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
                        os._exit(3)
                    return real(*args, **kwargs)

                return mock.patch.object(owner, name, step)

            patches = [wrap(owner, name) for owner, name in steps]
            for patch in patches:
                patch.start()
            save_epoch(tmp_path, 3)

        pid = in_child(crashing_save)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        # 3: died at the chosen step; 0: the write has fewer steps, so it finished. Anything
        # else is a failure of the test itself (say, a patched name that no longer exists).
        assert code in (0, 3), f"the writer failed at crash point {crash_at} (exit code {code})"
        assert crash_at <= 50, "a checkpoint write has far more steps than expected"
        finished = code == 0
        outcomes.add(assert_whole(tmp_path))
        if not finished:
            TRIED["crashes before a checkpoint write step"] += 1
            save_epoch(tmp_path, 2)  # back to a known state for the next crash point
        crash_at += 1
    assert TRIED["crashes before a checkpoint write step"] >= 8 and outcomes == {2, 3}
    assert not list(tmp_path.glob(".staging-*"))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_byte_flips_in_every_checkpoint_file_are_caught_and_resume_falls_back(tmp_path):
    save_epoch(tmp_path, 1)
    newest = save_epoch(tmp_path, 2)
    rng = random.Random(1)
    files = sorted(p for p in newest.iterdir())
    assert [p.name for p in files] == ["manifest.json", "model.safetensors", "training_state.pt"]
    for path in files:
        original = path.read_bytes()
        size = len(original)
        # Header bytes, then bytes drawn anywhere (mostly tensor data for the large files).
        for offset in [0, 8, *(rng.randrange(size) for _ in range(6))]:
            flip_byte(path, offset)
            with pytest.raises(ValueError, match=re.escape(str(newest))) as error:
                load_training_state(newest)
            if path.name != "manifest.json":
                assert path.name in str(error.value)
            with pytest.warns(RuntimeWarning, match="newest whole checkpoint.*epoch_0001"):
                assert load_latest_training_state(tmp_path).epoch == 1
            path.write_bytes(original)
            TRIED["byte flips"] += 1
        assert load_training_state(newest).epoch == 2
    assert TRIED["byte flips"] == 24


@pytest.fixture(scope="module")
def reid_model():
    return dcsd.create_model("resnet50_reid", num_classes=4)


def test_byte_flips_in_a_model_folder_stop_load_model(reid_model, tmp_path):
    model = reid_model
    model.save_pretrained(tmp_path)
    write_manifest(tmp_path)  # a training checkpoint folder: config, weights, manifest
    loaded = dcsd.load_model(tmp_path).state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in model.state_dict().items())
    for name in ("config.json", "model.safetensors"):
        path = tmp_path / name
        original = path.read_bytes()
        flip_byte(path, len(original) // 2)
        with pytest.raises(ChecksumError, match=name):
            dcsd.load_model(tmp_path)
        with pytest.raises(ChecksumError, match=name):
            dcsd.create_model("resnet50_reid", num_classes=4, checkpoint_path=tmp_path)
        path.write_bytes(original)
        TRIED["byte flips"] += 1


class InjectingLoader:
    """Wraps a train loader and puts inf into one image of one step (step None: every step)."""

    def __init__(self, loader, epoch_step, value=float("inf")):
        self.loader, self.batch_sampler = loader, loader.batch_sampler
        self.epoch_step, self.value, self.epoch = epoch_step, value, -1

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        for step, batch in enumerate(self.loader):
            if self.epoch_step in ((self.epoch, step), (self.epoch, None)):
                batch["image"][1, 0, 0, 0] = self.value
            yield batch


def read_log(path: Path) -> list[dict]:
    def refuse(constant):
        raise ValueError(f"log holds {constant}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_input_stops_the_run_naming_the_step(tiny_data, tmp_path, value):
    trainer = make_trainer(tiny_data, tmp_path, epochs=3)
    trainer.train_loader = InjectingLoader(trainer.train_loader, (1, 1), value)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2/\d+ .*loss nan.*\.png"):
        trainer.fit()
    TRIED["NaN / inf injections"] += 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0001", "latest"]
    assert [record["epoch"] for record in read_log(tmp_path / "log.jsonl")] == [1]


def test_skip_mode_drops_the_step_and_keeps_training(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, epochs=2)
    trainer.config.nonfinite = "skip"
    trainer.train_loader = InjectingLoader(trainer.train_loader, (1, 0))
    with pytest.warns(RuntimeWarning, match="skipped a non-finite step at epoch 2, step 1"):
        records = trainer.fit()
    TRIED["NaN / inf injections"] += 1
    assert [r["skipped_steps"] for r in records] == [0, 1]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert assert_finite_checkpoint(tmp_path / "checkpoints") == 2


def test_skip_mode_stops_when_a_whole_epoch_is_skipped(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, epochs=1)
    trainer.config.nonfinite = "skip"
    trainer.train_loader = InjectingLoader(trainer.train_loader, (0, None))
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="every step"):
        trainer.fit()
    TRIED["NaN / inf injections"] += 1
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def assert_finite_checkpoint(directory: Path) -> int:
    checkpoint = load_training_state(directory)
    assert all(bool(torch.isfinite(v).all()) for v in checkpoint.model_state.values())
    return checkpoint.epoch


def test_huge_learning_rate_stops_before_a_nan_checkpoint(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, epochs=3)
    trainer.config.lr = 1e10  # the tiny net stays finite at 1e6, ResNet50 does not
    for group in trainer.optimizer.param_groups:
        group["lr"] = group["initial_lr"] = 1e10
    trainer.scheduler.base_lrs = [1e10] * len(trainer.optimizer.param_groups)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2/.*loss nan, id .*gradient"):
        trainer.fit()
    TRIED["NaN / inf injections"] += 1
    assert latest_checkpoint(tmp_path / "checkpoints") is None
    assert not (tmp_path / "log.jsonl").exists()


def test_non_finite_weights_are_never_written(tmp_path):
    save_epoch(tmp_path, 1)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="non-finite values"):
            save_training_state(tmp_path, Filled(bad), {"epoch": 2})
        TRIED["NaN / inf injections"] += 1
    assert assert_whole(tmp_path) == 1 and not (tmp_path / "epoch_0002").exists()


def test_used_out_folder_is_refused_then_overwritten_cleanly(tiny_data, tmp_path):
    first = make_trainer(tiny_data, tmp_path, epochs=3)
    first.fit()
    exported = first.export_model()
    assert {"model.safetensors", "train_config.json"} <= {p.name for p in exported.iterdir()}
    with pytest.raises(FileExistsError, match="epoch_0002, epoch_0003, latest, log.jsonl, model"):
        make_trainer(tiny_data, tmp_path, epochs=1).fit()
    TRIED["used or bad output folders"] += 1
    assert load_training_state(tmp_path / "checkpoints").epoch == 3
    fresh = make_trainer(tiny_data, tmp_path, epochs=1)
    fresh.overwrite = True
    fresh.fit()
    assert not exported.exists(), "overwrite must delete the old run's exported model too"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0001", "latest"]
    assert [record["epoch"] for record in read_log(tmp_path / "log.jsonl")] == [1]
    assert make_trainer(tiny_data, tmp_path, epochs=2).resume() == 1


def test_pruning_never_deletes_what_latest_names(tmp_path):
    for epoch in (2, 3, 1):
        save_epoch(tmp_path, epoch)
    TRIED["used or bad output folders"] += 1
    assert assert_whole(tmp_path) == 1


def test_bad_out_folders_are_refused_before_training(tiny_data, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        make_trainer(tiny_data, a_file)
    with pytest.raises(PermissionError, match="not writable"):
        make_trainer(tiny_data, a_file / "run")
    TRIED["used or bad output folders"] += 2


def test_evaluation_failure_keeps_the_epoch(tiny_data, tmp_path):
    def out_of_memory(model):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    trainer = make_trainer(tiny_data, tmp_path, epochs=1, evaluate=out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        trainer.fit()
    TRIED["evaluation failures"] += 1
    assert load_training_state(tmp_path / "checkpoints").epoch == 1
    (record,) = read_log(tmp_path / "log.jsonl")
    assert "out of memory" in record["eval_error"] and np.isfinite(record["loss"])


def test_resume_names_dangling_latest_and_missing_state(tiny_data, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    make_trainer(tiny_data, tmp_path, epochs=2).fit()
    (checkpoints / "latest").write_text("epoch_0007\n")
    with pytest.raises(FileNotFoundError, match="names epoch_0007, which does not exist"):
        load_training_state(checkpoints)
    with pytest.warns(RuntimeWarning, match="latest names epoch_0007.*epoch_0002"):
        assert make_trainer(tiny_data, tmp_path, epochs=3).resume() == 2
    TRIED["bad checkpoint states"] += 1
    state_file = checkpoints / "epoch_0002" / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["optimizer"]
    torch.save(state, state_file)
    write_manifest(state_file.parent)
    with pytest.raises(ValueError, match=r"training_state.pt lacks \['optimizer'\]"):
        make_trainer(tiny_data, tmp_path, epochs=3).resume(checkpoints / "epoch_0002")
    TRIED["bad checkpoint states"] += 1


def test_changed_lr_on_resume_is_applied_and_named(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, epochs=1).fit()
    trainer = make_trainer(tiny_data, tmp_path, epochs=2)
    trainer.config.lr = 1e-3
    trainer.config.weight_decay_norm = 0.0
    with pytest.warns(RuntimeWarning, match=r"lr 0.01 -> 0.001"):
        trainer.resume()
    TRIED["bad arguments"] += 1
    factor = trainer.scheduler.lr_lambdas[0](trainer.scheduler.last_epoch)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)
    # Each parameter group takes its own new rate and weight decay.
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert groups["decay"]["weight_decay"] == trainer.config.weight_decay
    assert trainer.scheduler.base_lrs == [1e-3] * len(groups)
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["initial_lr"] == 1e-3


def test_load_model_names_the_bad_file(stranger_folder):
    tmp_path = stranger_folder
    config = tmp_path / "config.json"
    good = config.read_text()
    cases = {
        "[1, 2]": "must hold a JSON object",
        "{not json": "is not valid JSON",
        good[:-2] + ', "no_such_option": 1}': "holds options resnet50_reid refuses",
    }
    for text, message in cases.items():
        config.write_text(text)
        with pytest.raises(ValueError, match=message) as error:
            dcsd.load_model(tmp_path)
        assert "config.json" in str(error.value)
        TRIED["bad files"] += 1
    config.write_text(good)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="model.safetensors are corrupt"):
        dcsd.load_model(tmp_path)
    TRIED["bad files"] += 1


def write_image(path: Path, size=(4, 8), suffix_format="JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path, format=suffix_format)


def test_bad_evaluation_images_are_found_before_training(tiny_data, tmp_path):
    gallery = [item.path for item in next(iter(tiny_data.eval_splits.values()))[1]]
    originals = {path: Path(path).read_bytes() for path in gallery[:3]}
    Path(gallery[0]).write_bytes(b"not an image")
    Path(gallery[1]).write_bytes(originals[gallery[1]][:40])
    os.rename(gallery[2], gallery[2] + ".moved")
    try:
        with pytest.raises(ValueError, match="3 of .* images cannot be read") as error:
            build_eval_splits(tiny_data, image_size=(32, 16), num_workers=0)
    finally:
        for path, data in originals.items():
            Path(path).write_bytes(data)
        os.remove(gallery[2] + ".moved")
    for path in gallery[:3]:
        assert path in str(error.value)
    TRIED["bad files"] += 3


def test_decompression_bomb_is_named(tmp_path):
    path = tmp_path / "huge.png"
    write_image(path, size=(64, 64), suffix_format="PNG")
    with mock.patch.object(Image, "MAX_IMAGE_PIXELS", 100):
        with pytest.raises(OSError, match="huge.png: DecompressionBombError"):
            ImageDataset([ReIDItem(str(path), 0, 0)])[0]
        with pytest.raises(ValueError, match="huge.png: DecompressionBombError"):
            check_images([str(path)])
    TRIED["bad files"] += 1


def make_market(root: Path, gallery: list[str]) -> Path:
    folder = root / "Market-1501-v15.09.15"
    for sub, names in (
        ("bounding_box_train", ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg"]),
        ("query", ["0001_c1s1_001051_00.jpg"]),
        ("bounding_box_test", gallery),
    ):
        for name in names:
            write_image(
                folder / sub / name, suffix_format="PNG" if name.endswith("png") else "JPEG"
            )
    return folder


def test_market_style_files_are_read_or_named(tmp_path):
    folder = make_market(tmp_path / "a", ["0001_c2s1_000301_01.png"])
    (folder / "bounding_box_test" / "notes.txt").write_text("x")
    with pytest.warns(RuntimeWarning, match=r"skipped 1 non-image file.*notes.txt"):
        market = Market1501(tmp_path / "a")
    assert [Path(item.path).name for item in market.gallery] == ["0001_c2s1_000301_01.png"]
    TRIED["bad files"] += 2
    make_market(tmp_path / "b", ["x-_c1s1_000001_01.jpg"])
    with pytest.raises(ValueError, match="x-_c1s1_000001_01.jpg"):
        Market1501(tmp_path / "b")
    TRIED["bad files"] += 1


@pytest.fixture(scope="module")
def dcsd_model():
    return dcsd.create_model("resnet50_dcsd", num_classes=2, num_domains=2, num_cameras=2).eval()


@pytest.mark.parametrize(
    "images, error, message",
    [
        (torch.zeros(1, 3, 32, 16, dtype=torch.float64), TypeError, "normalised torch.float32"),
        (torch.zeros(1, 3, 32, 16, dtype=torch.float16), TypeError, "got torch.float16"),
        (torch.zeros(1, 3, 32, 16, dtype=torch.uint8), TypeError, r"images.float\(\) / 255"),
        (np.zeros((1, 3, 32, 16), np.float32), TypeError, "torch.from_numpy"),
        (torch.zeros(1, 32, 16, 3), ValueError, r"\(N, 3, H, W\)"),
    ],
)
def test_bad_model_inputs_are_named(dcsd_model, images, error, message):
    with pytest.raises(error, match=message):
        dcsd_model(images)
    TRIED["bad arguments"] += 1


def test_empty_query_or_gallery_is_named():
    with pytest.raises(ValueError, match="gallery is empty"):
        rank_metrics(np.zeros((2, 0)), [1, 2], [], [0, 0], [])
    with pytest.raises(ValueError, match="query set is empty"):
        rank_metrics(np.zeros((0, 2)), [], [1, 2], [], [0, 1])
    TRIED["bad arguments"] += 2


def test_bad_train_config_values_are_named():
    for kwargs, message in (
        ({"nonfinite": "ignore"}, "nonfinite must be one of"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"lr": 0.0}, "lr must be a finite number"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1"),
        ({"checkpoint_period": 0}, "checkpoint_period must be >= 1"),
        ({"eval_period": -1}, "eval_period must be >= 0"),
        ({"warmup_epochs": -1.0}, "warmup_epochs must be a finite number >= 0"),
        ({"warmup_epochs": float("inf")}, "warmup_epochs must be a finite number >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**kwargs)
        TRIED["bad arguments"] += 1


def hold_lock_in_child(folder: Path):
    """A child process holding ``folder``'s run lock until killed; returns its pid."""
    ready_read, ready_write = os.pipe()

    def hold():
        lock = RunLock(folder)
        lock.acquire()
        os.write(ready_write, b"x")
        time.sleep(600)
        lock.release()

    pid = in_child(hold)
    os.read(ready_read, 1)
    os.close(ready_read)
    os.close(ready_write)
    return pid


def test_a_second_run_in_one_folder_is_refused_naming_the_holder(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, epochs=1).fit()
    pid = hold_lock_in_child(tmp_path)
    try:
        holder = rf"in use by another run \(pid {pid} on host {re.escape(socket.gethostname())}"
        started = time.perf_counter()
        with pytest.raises(RunLockedError, match=holder):
            make_trainer(tiny_data, tmp_path, epochs=2).resume()
        fresh = make_trainer(tiny_data, tmp_path, epochs=1)
        fresh.overwrite = True
        with pytest.raises(RunLockedError, match=holder):
            fresh.fit()
        assert time.perf_counter() - started < 5, "refused at once, not after waiting"
        argv = ["train", "--out", str(tmp_path), "--resume", "--device", "cpu"]
        with mock.patch.object(train_command, "load_domains") as data:
            with pytest.raises(RunLockedError, match=holder):
                dcsd_command(argv)
        assert not data.called, "refused before building any data"
        TRIED["concurrent runs"] += 3
        # Nothing of the first run was touched by the refused ones.
        assert load_training_state(tmp_path / "checkpoints").epoch == 1
        assert [record["epoch"] for record in read_log(tmp_path / "log.jsonl")] == [1]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # The kernel dropped the dead holder's lock: the run resumes.
    resumed = make_trainer(tiny_data, tmp_path, epochs=2)
    assert resumed.resume() == 1
    resumed.fit()
    assert [record["epoch"] for record in read_log(tmp_path / "log.jsonl")] == [1, 2]


def test_two_trainers_of_one_process_cannot_share_a_folder(tiny_data, tmp_path):
    first = make_trainer(tiny_data, tmp_path, epochs=1)
    assert first.resume() == 0  # holds the lock until its fit() ends
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()} "):
        make_trainer(tiny_data, tmp_path, epochs=1).fit()
    TRIED["concurrent runs"] += 1
    first.fit()
    make_trainer(tiny_data, tmp_path, epochs=2).resume()  # released by fit()


def test_staging_cleanup_keeps_folders_of_live_writers(tmp_path):
    save_epoch(tmp_path, 1)
    host = socket.gethostname()
    (tmp_path / "elsewhere").mkdir()
    pid = hold_lock_in_child(tmp_path / "elsewhere")  # a live process of this host
    dead = in_child(lambda: None)
    os.waitpid(dead, 0)
    try:
        live = tmp_path / f".staging-{host}-{pid}-abc"
        gone = tmp_path / f".staging-{host}-{dead}-abc"
        other_host = tmp_path / f".staging-{host}x-{dead}-abc"
        for folder in (live, gone, other_host):
            folder.mkdir()
            (folder / "model.safetensors").write_bytes(b"being written")
        save_epoch(tmp_path, 2)
        assert live.is_dir() and other_host.is_dir() and not gone.exists()
        TRIED["concurrent runs"] += 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    save_epoch(tmp_path, 3)
    assert not live.exists() and other_host.is_dir()


def damage_manifest(folder: Path, edit) -> None:
    manifest = folder / "manifest.json"
    content = json.loads(manifest.read_text())
    manifest.write_text(edit(content))


def test_no_damage_to_latest_or_a_manifest_defeats_the_fall_back(tmp_path):
    save_epoch(tmp_path, 1)
    newest = save_epoch(tmp_path, 2)
    latest = tmp_path / "latest"
    manifest = newest / "manifest.json"
    originals = {latest: latest.read_bytes(), manifest: manifest.read_bytes()}

    def big_bytes(content):
        text = json.dumps(content)
        return text.replace(str(content["files"]["model.safetensors"]["bytes"]), "4e19904", 1)

    def unlisted_weights(content):
        content["files"] = {}
        return json.dumps(content)

    latest_cases = {
        b"epoch_\xff0002\n": "latest is unreadable",
        b"/etc\n": "names '/etc', which is not an epoch folder of this run",
        b"../epoch_0002\n": "names '../epoch_0002', which is not an epoch folder",
        b"epoch_0002/../epoch_0001\n": "not an epoch folder",
    }
    for content, message in latest_cases.items():
        latest.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            load_training_state(tmp_path)
        with pytest.warns(RuntimeWarning, match=re.escape(message) + ".*newest whole.*epoch_0002"):
            assert load_latest_training_state(tmp_path).epoch == 2
        TRIED["bad checkpoint states"] += 1
    latest.write_bytes(originals[latest])
    manifest_cases = {
        big_bytes: "no valid byte count",
        lambda c: "[" * 100_000 + "]" * 100_000: "manifest.json is unreadable: RecursionError",
        lambda c: '{"format": "dcsd-manifest/1", "files": ' * 50_000: "RecursionError",
        unlisted_weights: r"holds \['model.safetensors', 'training_state.pt'\], which",
        lambda c: json.dumps(c).replace('"bytes": ', '"bytes": true, "x": ', 1): "byte count",
        lambda c: json.dumps(c).replace('"sha256": "', '"sha256": "zz', 1): "no valid SHA-256",
    }
    for edit, message in manifest_cases.items():
        damage_manifest(newest, edit)
        flip_byte(newest / "model.safetensors", 200_000)
        with pytest.raises(ChecksumError, match=message):
            load_training_state(newest)
        with pytest.warns(RuntimeWarning, match=message + ".*newest whole.*epoch_0001"):
            assert load_latest_training_state(tmp_path).epoch == 1
        flip_byte(newest / "model.safetensors", 200_000)
        manifest.write_bytes(originals[manifest])
        TRIED["bad checkpoint states"] += 1
    assert assert_whole(tmp_path) == 2


def test_latest_and_epoch_folders_never_lead_out_of_the_run(tmp_path):
    other = tmp_path / "other"
    save_epoch(other, 5)
    run = tmp_path / "run"
    save_epoch(run, 1)
    newest = save_epoch(run, 2)
    flip_byte(newest / "model.safetensors", 1000)  # damaged: the fall-back looks for others
    (run / "epoch_0009").symlink_to(other / "epoch_0005")
    with pytest.warns(RuntimeWarning, match="newest whole checkpoint.*epoch_0001"):
        assert load_latest_training_state(run).epoch == 1
    (run / "latest").write_text("epoch_0009\n")
    with pytest.raises(FileNotFoundError, match="names epoch_0009, which does not exist"):
        load_training_state(run)
    TRIED["bad checkpoint states"] += 2


class ConfiguredNet(test_engine_trainer.TinyReIDNet):
    """The tiny net with a dcsd model's ``config``."""

    def __init__(self, *sizes, head="bot"):
        super().__init__(*sizes)
        self.config = {"architecture": "tiny", "head": head, "num_classes": sizes[0]}


def test_resume_with_settings_that_change_the_weights_meaning_is_refused(tiny_data, tmp_path):
    def trainer(data=tiny_data, head="bot", epochs=2, **later_settings):
        model = ConfiguredNet(data.num_classes, data.num_domains, data.num_cameras, head=head)
        model.config |= later_settings
        loader = dcsd.engine.build_train_loader(
            data, image_size=(32, 16), num_identities=4, num_instances=2, num_workers=0
        )
        config = TrainConfig(epochs, lr=1e-2, warmup_epochs=1, milestones=(2,), progress=False)
        return Trainer(model, DCSDLoss(), loader, config, tmp_path, data=data)

    trainer(epochs=1).fit()
    reordered = dcsd.data.MultiDomainDataset(list(reversed(tiny_data.datasets)))
    fewer_ids = dcsd.data.MultiDomainDataset(
        dcsd.data.make_synthetic_domains(
            root=tmp_path / "fewer",
            num_domains=2,
            train_ids_per_domain=5,
            test_ids_per_domain=4,
            image_size=(32, 16),
        )
    )
    names = [d.name for d in tiny_data.datasets]
    for kwargs, message in (
        ({"data": reordered}, rf"\(--datasets, their order.*checkpoint \[\['{names[0]}'"),
        ({"data": fewer_ids}, r"checkpoint \[\['synth0', 6, .* this run \[\['synth0', 5"),
        ({"head": "agw"}, r"head \(--head\): checkpoint 'bot', this run 'agw'"),
        (
            {"stop_gradient": True},  # a model setting the checkpoint predates
            r"stop_gradient \(--no-stop-gradient\): checkpoint none \(saved before this "
            r"setting existed\), this run True",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            trainer(**kwargs).resume()
        TRIED["resumes with changed settings refused"] += 1
    assert trainer().resume() == 1


def test_resume_into_another_model_names_it_in_a_few_words(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, epochs=1).fit()
    other = make_trainer(tiny_data, tmp_path, epochs=2)
    other.model.neck = torch.nn.BatchNorm1d(16, affine=False)
    with pytest.raises(ValueError, match=r"not this model's \(2 tensors the model lacks") as error:
        other.resume()
    assert len(str(error.value)) < 400
    TRIED["resumes with changed settings refused"] += 1


def test_resume_with_another_batch_is_named_in_a_warning(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, epochs=1).fit()
    resumed = make_trainer(tiny_data, tmp_path, epochs=2)
    resumed.train_loader.batch_sampler.num_instances = 3
    with pytest.warns(RuntimeWarning, match=r"batch \(--batch\) \[4, 2\] -> \[4, 3\]"):
        assert resumed.resume() == 1
    TRIED["resumes with changed settings refused"] += 1


def test_resume_sets_a_torn_or_stale_log_aside_and_keeps_one_line_per_epoch(tiny_data, tmp_path):
    log = tmp_path / "log.jsonl"
    make_trainer(tiny_data, tmp_path, epochs=3).fit()
    lines = log.read_text().splitlines(keepends=True)
    # A fall-back to epoch 2 after epoch 3's line was written, then a write torn mid-line.
    log.write_text("".join(lines) + lines[2][:25])
    (tmp_path / "checkpoints" / "latest").write_text("epoch_0002\n")
    resumed = make_trainer(tiny_data, tmp_path, epochs=4)
    assert resumed.resume() == 2
    with pytest.warns(RuntimeWarning, match=r"up to the resumed epoch 2 .*set 2 other line"):
        resumed.fit()
    assert [record["epoch"] for record in read_log(log)] == [1, 2, 3, 4]
    aside = (tmp_path / "log.jsonl.set-aside").read_text()
    assert aside == lines[2] + lines[2][:25] + "\n"
    TRIED["torn or stale logs"] += 1
    # A stale line of another run (epoch 7) before this one's.
    log.write_text('{"epoch": 7, "loss": 1.0}\n' + log.read_text())
    with pytest.warns(RuntimeWarning, match="set 1 other line"):
        again = make_trainer(tiny_data, tmp_path, epochs=5)
        assert again.resume() == 4
        again.fit()
    assert [record["epoch"] for record in read_log(log)] == [1, 2, 3, 4, 5]
    TRIED["torn or stale logs"] += 1


def test_overwrite_never_follows_a_symlink_out_of_the_run(tiny_data, tmp_path):
    other = tmp_path / "other"
    make_trainer(tiny_data, other, epochs=2).fit()
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(other / "checkpoints")
    with pytest.raises(FileExistsError, match=r"checkpoints \(a symlink to .*other/checkpoints"):
        make_trainer(tiny_data, run, epochs=1).fit()
    with pytest.raises(FileExistsError, match="never follows a symlink"):
        make_trainer(tiny_data, run, epochs=3).resume()
    fresh = make_trainer(tiny_data, run, epochs=1)
    fresh.overwrite = True
    fresh.fit()
    assert not (run / "checkpoints").is_symlink()
    assert load_training_state(run / "checkpoints").epoch == 1
    assert load_training_state(other / "checkpoints").epoch == 2, "the link's target is kept"
    TRIED["used or bad output folders"] += 3


def test_a_file_in_place_of_the_checkpoints_folder_is_found_before_training(tiny_data, tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    trainer = make_trainer(tiny_data, tmp_path, epochs=1)
    with mock.patch.object(trainer, "train_one_epoch") as train_one_epoch:
        with pytest.raises(FileExistsError, match=r"checkpoints \(not a folder\)"):
            trainer.fit()
        with pytest.raises(FileExistsError, match=r"checkpoints \(not a folder\)"):
            make_trainer(tiny_data, tmp_path, epochs=1).resume()
    assert not train_one_epoch.called
    TRIED["used or bad output folders"] += 2


def test_train_config_refuses_values_that_would_do_something_else():
    for kwargs, message in (
        ({"milestones": (5, 2)}, r"milestones must be increasing epochs >= 1, got \[5, 2\]"),
        ({"milestones": (3, 3)}, "milestones must be increasing"),
        ({"milestones": (0,)}, "milestones must be >= 1, got 0"),
        ({"milestones": (2.5,)}, "milestones must be an int, got float 2.5"),
        ({"gamma": float("nan")}, "gamma must be a finite number > 0"),
        ({"warmup_factor": float("nan")}, "warmup_factor must be a finite number > 0"),
        ({"warmup_factor": 0.0}, "warmup_factor must be a finite number > 0"),
        ({"seed": 2**70}, r"seed must be an int in 0..2\*\*32-1"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
    ):
        with pytest.raises((TypeError, ValueError), match=message):
            TrainConfig(**kwargs)
        TRIED["bad arguments"] += 1


@pytest.mark.parametrize(
    "argv, message",
    [
        ("--milestones 5 2", r"milestones must be increasing epochs >= 1, got \[5, 2\]"),
        ("--epochs 0", "epochs must be >= 1, got 0"),
        ("--batch 1 1", "data.batch: batch P K must have P >= 2 identities of K >= 2 images"),
        ("--batch 8 1", "data.batch: batch P K must have P >= 2"),
        ("--image-size 1 1", "data.image_size: image_size H W must be at least 32 16, got 1 1"),
        (f"--seed {2**70}", "train.seed: seed must be an int in 0..2"),
    ],
)
def test_dcsd_train_refuses_arguments_naming_them(argv, message, capsys, tmp_path):
    with (
        mock.patch.object(train_command, "load_domains") as data,
        pytest.raises(SystemExit),
    ):
        dcsd_command(["train", "--out", str(tmp_path / "run"), *argv.split()])
    assert not data.called, "refused before building any data"
    assert re.search(message, capsys.readouterr().err)
    TRIED["bad arguments"] += 1


def test_every_model_folder_the_library_writes_is_verified(reid_model, tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path / "run", epochs=1)
    trainer.model = reid_model  # export_model writes whatever model the trainer holds
    exported = trainer.export_model()
    assert "train_config.json" in json.loads((exported / "manifest.json").read_text())["files"]
    reid_model.save_pretrained(tmp_path / "saved")  # + README.md, the Hub's card, not listed
    for folder in (exported, tmp_path / "saved"):
        listed = json.loads((folder / "manifest.json").read_text())["files"]
        assert {"model.safetensors", "config.json"} <= set(listed) and "README.md" not in listed
        dcsd.load_model(folder)
        weights = folder / "model.safetensors"
        original = weights.read_bytes()
        data = bytearray(original)
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # 64 bytes of 16 weights zeroed
        weights.write_bytes(bytes(data))
        with pytest.raises(ChecksumError, match="model.safetensors does not match its SHA-256"):
            dcsd.load_model(folder)
        weights.write_bytes(original)
        (folder / "extra.safetensors").write_bytes(b"x")
        with pytest.raises(ChecksumError, match=r"holds \['extra.safetensors'\], which"):
            dcsd.load_model(folder)
        (folder / "extra.safetensors").unlink()
        TRIED["byte flips"] += 1
        TRIED["bad files"] += 1


@pytest.fixture()
def stranger_folder(reid_model, tmp_path):
    """A model folder as a stranger's Hub repo may hold it: no manifest, config.json editable."""
    reid_model.save_pretrained(tmp_path)
    (tmp_path / "manifest.json").unlink(missing_ok=True)
    return tmp_path


def edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("value", [True, "imagenet", "/etc/passwd", "../other"])
def test_a_folder_config_never_triggers_loading(stranger_folder, value):
    edit_config(stranger_folder, lambda c: c.update(pretrained=value))
    loaders = ("download_checkpoint", "imagenet_state_dict", "load_weights")
    patches = [mock.patch.object(pretrained_module, name) for name in loaders]
    mocks = [patch.start() for patch in patches]
    try:
        with pytest.raises(ValueError, match="config.json holds 'pretrained'"):
            dcsd.load_model(stranger_folder)
    finally:
        for patch in patches:
            patch.stop()
    assert not any(called.called for called in mocks)
    TRIED["untrusted model folders"] += 1


def test_config_sizes_are_checked_against_the_weights_before_allocating(stranger_folder):
    real_create_model = pretrained_module.create_model
    devices = []

    def recording_create_model(*args, **kwargs):
        devices.append(torch.empty(0).device.type)  # the default device in force
        return real_create_model(*args, **kwargs)

    edit_config(stranger_folder, lambda c: c.update(num_classes=250_000))
    with mock.patch.object(pretrained_module, "create_model", recording_create_model):
        with pytest.raises(ValueError, match="identity classifier has 4 classes, the model 250000"):
            dcsd.load_model(stranger_folder)
    assert devices == ["meta"], "nothing of the config's size may be allocated"
    edit_config(stranger_folder, lambda c: c.update(num_classes=1e9))
    with pytest.raises(ValueError, match="config.json holds options resnet50_reid refuses"):
        dcsd.load_model(stranger_folder)
    TRIED["untrusted model folders"] += 2


@pytest.mark.parametrize(
    "card, message",
    [
        ({"input_size": [3, 200000, 100000]}, r"input_size must be \(3, H, W\) with H, W in"),
        ({"mean": [float("nan"), 0.4, 0.4]}, "mean must be 3 finite numbers"),
        ({"mean": [0.4, 0.4]}, "mean must be 3 finite numbers"),
        ({"std": [0.2, 0.0, 0.2]}, "std must be > 0"),
        ({"num_cameras": -3}, "num_cameras must be an int >= 0"),
    ],
)
def test_a_card_of_unbounded_or_non_finite_values_is_refused(stranger_folder, card, message):
    edit_config(stranger_folder, lambda c: c["pretrained_cfg"].update(card))
    with pytest.raises(ValueError, match=message) as error:
        dcsd.load_model(stranger_folder)
    assert "config.json pretrained_cfg" in str(error.value)
    TRIED["untrusted model folders"] += 1


def test_deep_config_missing_folders_and_nan_weights_are_named(stranger_folder, tmp_path):
    config = stranger_folder / "config.json"
    good = config.read_text()
    config.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(ValueError, match="config.json is not valid JSON: RecursionError"):
        dcsd.load_model(stranger_folder)
    config.write_text(good)
    for missing in ("/no/such/folder", "/missing", "../missing", "./missing", "a/../b"):
        with pytest.raises(FileNotFoundError, match=f"no such folder: '{re.escape(missing)}'"):
            dcsd.load_model(missing)
        TRIED["untrusted model folders"] += 1
    weights = safetensors.torch.load_file(stranger_folder / "model.safetensors")
    weights["bn1.weight"][3] = float("nan")
    safetensors.torch.save_file(weights, stranger_folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"hold NaN or inf in 1 tensor\(s\) \(bn1.weight\)"):
        dcsd.load_model(stranger_folder)
    TRIED["untrusted model folders"] += 2


def test_a_truncated_jpeg_and_a_fifo_are_found_before_training(tiny_data, tmp_path):
    gallery = [item.path for item in next(iter(tiny_data.eval_splits.values()))[1]]
    truncated, fifo = gallery[0], gallery[1]
    originals = {path: Path(path).read_bytes() for path in (truncated, fifo)}
    big = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(big)
    data = big.read_bytes()
    Path(truncated).write_bytes(data[: len(data) * 2 // 3])  # header whole, scan data cut
    with Image.open(truncated) as image:
        image.verify()  # what the check did before: it passes
    os.remove(fifo)
    os.mkfifo(fifo)

    def hung(signum, frame):
        raise TimeoutError("opening the FIFO blocked: it must be refused by its type")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with pytest.raises(ValueError, match="2 of .* images cannot be read") as error:
            build_eval_splits(tiny_data, image_size=(32, 16), num_workers=0)
        with pytest.raises(OSError, match="it is a FIFO, not a regular file"):
            ImageDataset([ReIDItem(fifo, 0, 0)])[0]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.remove(fifo)
        for path, content in originals.items():
            Path(path).write_bytes(content)
    assert f"{truncated}: OSError: image file is truncated" in str(error.value)
    assert f"{fifo}: it is a FIFO, not a regular file" in str(error.value)
    TRIED["bad files"] += 2


def test_sixteen_bit_and_rotated_images_are_read_as_they_look(tmp_path):
    grey = np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 32  # 0..65504
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as raw:
        assert raw.mode.startswith("I")  # PIL alone clips this to white: mean 0.998
    loaded = ImageDataset([ReIDItem(str(tmp_path / "grey16.png"), 0, 0)])[0]["image"]
    expected = torch.from_numpy(np.round(grey / 257.0) / 255.0).float()
    assert torch.allclose(loaded[0], expected, atol=1e-6) and torch.equal(loaded[0], loaded[2])
    # A 2x1 image stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise).
    stored = np.zeros((1, 2, 3), np.uint8)
    stored[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif.tobytes())
    upright = ImageDataset([ReIDItem(str(tmp_path / "rotated.png"), 0, 0)])[0]["image"]
    assert upright.shape == (3, 2, 1)  # rotated clockwise: the red pixel goes on top
    assert upright[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and upright[:, 1, 0].tolist() == [0, 0, 0]
    TRIED["bad files"] += 2


def test_non_finite_features_are_named_by_row():
    query, gallery = torch.ones(3, 4), torch.zeros(5, 4)
    query[1, 2] = float("inf")
    gallery[[0, 4], 0] = float("nan")
    with pytest.raises(ValueError, match=r"query_feats rows \[1\] hold NaN or inf"):
        pairwise_distance(query, gallery)
    with pytest.raises(ValueError, match=r"gallery_feats rows \[0, 4\] hold NaN or inf"):
        pairwise_distance(torch.ones(3, 4), gallery)
    TRIED["bad arguments"] += 2


def test_extract_features_checks_its_outputs_before_extracting(reid_model, tmp_path):
    parser = build_parser()

    def parse_args(argv):
        return parser.parse_args(["extract", *argv])

    reid_model.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    queries = [ReIDItem(f"q{i}.jpg", i, 0) for i in range(3)]
    for argv, message in (
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(weights)], "is a model's weights .* pass --overwrite"),
        (["--out", str(tmp_path / "f.safetensors"), "--query-index", "3"], r"in 0..2 .*got 3"),
        (["--out", str(tmp_path / "f.safetensors"), "--query-index", "-1"], "got -1"),
    ):
        args = parse_args(["--images", str(tmp_path), *argv])
        with pytest.raises(SystemExit, match=message):
            extract_command.check_outputs(args, queries)
        TRIED["bad arguments"] += 1
    extract_command.check_outputs(
        parse_args(["--images", ".", "--out", str(weights), "--overwrite"]), queries
    )


def test_a_full_disk_during_a_checkpoint_write_is_said_and_loses_nothing(tmp_path):
    save_epoch(tmp_path, 1)
    full = RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
        "data/0: file write failed"
    )
    for owner, name, error in (
        (checkpoint_module.torch, "save", full),
        (pretrained_module.safetensors.torch, "save_file", OSError(28, "No space left on device")),
    ):
        with mock.patch.object(owner, name, side_effect=error):
            with pytest.raises(
                OSError, match=r"epoch_0002 .*MiB free.*full disk.*\(epoch_0001\) is intact"
            ):
                save_epoch(tmp_path, 2)
        assert not list(tmp_path.glob(".staging-*")), "the partial write frees its space"
        assert assert_whole(tmp_path) == 1
        TRIED["full disks"] += 1
