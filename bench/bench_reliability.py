"""Cost of the reliability guards on ResNet50-DCSD: the per-step non-finite check and the
checksummed, fsynced checkpoint.

``Trainer.train_step`` adds, after backward: the gradients' total norm, ``isfinite`` of it and
of the loss, and one host sync (``bool``). This times that check alone on the step's own
gradients, and the whole step (forward, DCSD loss, backward, check, Adam). Then it times
``save_training_state`` (with fsync and the SHA-256 manifest), hashing alone, and a verified
``load_training_state`` of the model with its Adam state. Last, the pre-training image check
(``check_images``, every evaluation image decoded in full) on ``--images`` JPEGs of noise (the
slowest to decode), extrapolated to MSMT17's 93,820 query + gallery images.

    python bench/bench_reliability.py                       # CPU, the demo's 32 x 64x32
    python bench/bench_reliability.py --batch 8 --size 256 128
    python bench/bench_reliability.py --steps 0 --images 3000   # the image check alone
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dcsd
from dcsd.data import check_images
from dcsd.engine import TrainConfig, Trainer, load_training_state, save_training_state
from dcsd.losses import DCSDLoss
from dcsd.manifest import sha256_file


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 32), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5, help="0: skip the model's timings")
    parser.add_argument("--images", type=int, default=2000, help="JPEGs for the image check")
    parser.add_argument(
        "--image-check-size", type=int, nargs=2, default=(256, 128), metavar=("H", "W")
    )
    args = parser.parse_args()
    if args.steps > 0:
        time_model(args)
    time_image_check(args.images, tuple(args.image_check_size))


MSMT17_EVAL_IMAGES = 11_659 + 82_161  # query + gallery


def time_image_check(count: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(count):
            path = Path(folder) / f"{index:05d}.jpg"
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
            paths.append(str(path))
        elapsed = seconds(lambda: check_images(paths))
    per_image = elapsed / count
    print(
        f"check_images (full decode, one process): {count} JPEGs of {size[0]}x{size[1]} noise in "
        f"{elapsed:.2f} s = {1000 * per_image:.2f} ms each; MSMT17's {MSMT17_EVAL_IMAGES} query "
        f"+ gallery images: {per_image * MSMT17_EVAL_IMAGES:.0f} s (extrapolated)"
    )


def time_model(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = dcsd.create_model("resnet50_dcsd", num_classes=84, num_domains=3, num_cameras=12)
    batch = {
        "image": torch.randn(args.batch, 3, *args.size),
        "pid": torch.arange(args.batch) // 4,
        "camid": torch.arange(args.batch) % 12,
        "domain": torch.arange(args.batch) % 3,
        "path": [f"image{i}" for i in range(args.batch)],
    }
    config = TrainConfig(epochs=1, progress=False, amp="off")
    trainer = Trainer(model.to(device), DCSDLoss(), [batch], config, tempfile.mkdtemp())
    step_times, check_times = [], []
    for step in range(args.steps + 2):
        start = time.perf_counter()
        parts = trainer.train_step(batch)
        float(parts["loss"])
        step_seconds = time.perf_counter() - start
        start = time.perf_counter()
        grads = [p.grad for p in trainer.optimizer_params if p.grad is not None]
        finite = torch.isfinite(parts["loss"]) & torch.isfinite(
            torch.nn.utils.get_total_norm(grads)
        )
        bool(finite)
        check_seconds = time.perf_counter() - start
        if step >= 2:  # warmup
            step_times.append(step_seconds)
            check_times.append(check_seconds)
    step_ms = 1000 * statistics.median(step_times)
    check_ms = 1000 * statistics.median(check_times)
    print(
        f"device {device}, batch {args.batch} x {args.size[0]}x{args.size[1]}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps"
    )
    print(f"training step (median): {step_ms:.1f} ms")
    print(
        f"non-finite check (median): {check_ms:.2f} ms = {100 * check_ms / step_ms:.2f}% of a step"
    )
    with tempfile.TemporaryDirectory() as out:
        state = trainer._training_state(1)
        save = seconds(lambda: save_training_state(out, trainer.unwrapped_model, state))
        files = sorted((Path(out) / "epoch_0001").iterdir())
        mib = sum(f.stat().st_size for f in files) / 2**20
        hashing = seconds(lambda: [sha256_file(f) for f in files])
        load = seconds(lambda: load_training_state(out))
    print(
        f"checkpoint of {mib:.0f} MiB (weights + Adam state): save_training_state {save:.2f} s "
        f"(fsync and manifest included), SHA-256 of its files {hashing:.2f} s, verified "
        f"load_training_state {load:.2f} s"
    )


if __name__ == "__main__":
    main()
