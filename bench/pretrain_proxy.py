"""Proxy pretraining for the miniature: a stand-in for the paper's ImageNet start (not ImageNet).

Neither ImageNet nor DDF's ImageNet file can be had on the benchmark's machine, so the
miniature's models start from networks pretrained here, on a pool of synthetic identities drawn
from another seed than every benchmark's data (so no benchmark identity is in it), over several
domain styles. Three networks train with the same recipe and epochs:

- ``static``: the static ResNet50 (dense 3x3), the start of the static rows and of "DCSD from
  a static start" (fresh generators: the ImageNet start's path, ``load_imagenet_backbone``);
- ``static_dw``: the static depthwise ResNet50 (a control: DCSD's connectivity, no dynamics),
  the start of the benchmark's static depthwise row;
- ``ddf``: ResNet50-DCSD with the sample factor only and DDF's layer (``filter_norm="ddf"``):
  DDF's ``ddf_mul_resnet50``. It is saved in DDF's key layout (``ddf_mul_resnet50_proxy.pth.tar``,
  a timm-style checkpoint) and the benchmark loads it through
  :func:`dcsd.models.load_ddf_backbone`, as a user loads DDF's real file.

Each network's top-1 on held-out images of the pool's identities (one image of each identity
with three or more, never trained on) is reported. Runs are cached under ``--root``. On the CPU
every network trains with one torch thread, whatever the caller's thread count: the weights
depend on it (the quick pool pretrained to other weights with two threads than with one), and
the benchmark's ledger keys its runs by the start's digest.

    python bench/pretrain_proxy.py                     # all three networks
    python bench/pretrain_proxy.py --networks ddf      # one (run several processes in parallel)
    python bench/pretrain_proxy.py --quick             # tiny smoke run (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reid_runs import RunSpec, build_model, run, run_folder, start_digest  # noqa: E402

from dcsd.data import MultiDomainDataset, ReIDDataset, make_synthetic_domains  # noqa: E402
from dcsd.data.image_dataset import read_image  # noqa: E402
from dcsd.data.transforms import build_test_transforms  # noqa: E402
from dcsd.models import load_weights, save_model  # noqa: E402

# The benchmarks draw their data from seeds 0, 1, 2, ...; the pool from its own.
POOL_SEED = 1000
IMAGE_SIZE = (64, 32)
DDF_FILE = "ddf_mul_resnet50_proxy.pth.tar"
# The torch threads of a CPU pretraining: the start's weights depend on the count, and every
# start in the benchmark's ledger was pretrained with one (two runs side by side on two cores).
PRETRAIN_THREADS = 1


@dataclass(frozen=True)
class Network:
    what: str
    model: str
    model_kwargs: dict
    tweaks: tuple[str, ...] = ()


NETWORKS = {
    "static": Network("static ResNet50 (dense 3x3)", "resnet50_reid", {}),
    "static_dw": Network("static depthwise ResNet50", "resnet50_reid", {}, tweaks=("depthwise",)),
    "ddf": Network(
        "DDF-style ResNet50-DCSD (factors S, DDF's layer)",
        "resnet50_dcsd",
        {"factors": ("sample",), "filter_norm": "ddf"},
    ),
}


@dataclass(frozen=True)
class PoolConfig:
    """The proxy pool and recipe; its hash keys the pretrained networks."""

    domains: int = 4
    ids_per_domain: int = 50
    epochs: int = 15
    batch: tuple[int, int] = (16, 4)

    def key(self) -> str:
        text = json.dumps({**self.__dict__, "seed": POOL_SEED, "size": IMAGE_SIZE}, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_pool(config: PoolConfig, root: Path | None = None) -> tuple[list[ReIDDataset], list]:
    """The pool's domains with one image of each identity (of those with three or more) held
    out, and the held-out images as ``(path, global label)``."""
    domains = make_synthetic_domains(
        root,
        num_domains=config.domains,
        train_ids_per_domain=config.ids_per_domain,
        test_ids_per_domain=2,
        image_size=IMAGE_SIZE,
        seed=POOL_SEED,
    )
    datasets, held_out, offset = [], [], 0
    for domain in domains:
        by_pid: dict[int, list] = {}
        for item in domain.train:
            by_pid.setdefault(item.pid, []).append(item)
        train = []
        for pid, items in sorted(by_pid.items()):
            if len(items) >= 3:
                held_out.append((items[-1].path, offset + pid))
                items = items[:-1]
            train.extend(items)
        datasets.append(
            ReIDDataset(f"proxy{len(datasets)}", domain.root, train, domain.query, domain.gallery)
        )
        offset += domain.num_train_pids
    return datasets, held_out


@torch.no_grad()
def top1(model: torch.nn.Module, held_out: list, batch: int = 64) -> float:
    """Top-1 (%) of the identity classifier on the held-out images."""
    transform = build_test_transforms(IMAGE_SIZE)
    model.eval()
    correct = 0
    for start in range(0, len(held_out), batch):
        chunk = held_out[start : start + batch]
        images = torch.stack([transform(read_image(path)) for path, _ in chunk])
        logits = model.head.classifier(model(images))
        labels = torch.tensor([label for _, label in chunk])
        correct += int((logits.argmax(1) == labels).sum())
    return 100.0 * correct / len(held_out)


def dcsd_to_ddf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DDF-style ResNet50-DCSD's weights in DDF's key layout (the inverse of
    :func:`dcsd.models.ddf.ddf_to_dcsd`); its classifier becomes DDF's ``fc``."""
    renames = {
        "spatial_branch.weight": ("spatial_branch.0.weight", lambda v: v),
        "spatial_branch.bias": ("spatial_branch.0.bias", lambda v: v),
        "channel_branch.0.weight": ("channel_branch.1.weight", lambda v: v[:, :, None, None]),
        "channel_branch.0.bias": ("channel_branch.1.bias", lambda v: v),
        "channel_branch.2.weight": ("channel_branch.3.weight", lambda v: v[:, :, None, None]),
        "channel_branch.2.bias": ("channel_branch.3.bias", lambda v: v),
        "channel_norm.scale": ("channel_branch.4.std", lambda v: v.reshape(-1)),
    }
    ddf = {}
    for key, value in state.items():
        if key.endswith("spatial_norm.scale") or key.startswith("head."):
            continue
        prefix, _, rest = key.partition(".conv2.")
        if rest in renames:
            name, reshape = renames[rest]
            ddf[f"{prefix}.conv2.{name}"] = reshape(value)
        else:
            ddf[key] = value
    ddf["fc.weight"] = state["head.classifier.weight"]
    ddf["fc.bias"] = torch.zeros(state["head.classifier.weight"].shape[0])
    return ddf


def pretrain(name: str, config: PoolConfig, root: Path, device: torch.device, quick: bool) -> dict:
    """Train (or read) one network; write its start under ``root/<key>/`` and return its
    result (top-1, seconds)."""
    network = NETWORKS[name]
    datasets, held_out = make_pool(config)
    spec = RunSpec(
        model=network.model,
        model_kwargs=network.model_kwargs,
        tweaks=network.tweaks,
        domains=tuple(d.name for d in datasets),
        epochs=config.epochs,
        batch=config.batch,
        image_size=IMAGE_SIZE,
        data=f"proxy pool seed {POOL_SEED}, {config.key()}" + (" quick" if quick else ""),
    )
    with _torch_threads(PRETRAIN_THREADS if device.type == "cpu" else None):
        result = run(spec, datasets, root / "runs", device)
    model = build_model(spec, MultiDomainDataset(datasets))
    load_weights(model, run_folder(spec, model, root / "runs") / "train" / "checkpoints")
    out = root / config.key()
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / f"{name}.json"
    summary_path.unlink(missing_ok=True)  # written last: the start is whole once it exists
    if name == "ddf":
        checkpoint = {
            "arch": "ddf_mul_resnet50",
            "epoch": config.epochs,
            "state_dict": {f"module.{k}": v for k, v in dcsd_to_ddf(model.state_dict()).items()},
        }
        torch.save(checkpoint, out / DDF_FILE)
    else:
        save_model(model, out / name)
    summary = {
        "network": name,
        "what": network.what,
        "top1": top1(model, held_out),
        "held_out_images": len(held_out),
        "identities": sum(d.num_train_pids for d in datasets),
        "train_images": sum(len(d.train) for d in datasets),
        "seconds": result["seconds"],
        "resumed_at_epoch": result["resumed_at_epoch"],
        # The benchmark's runs from this start are keyed by this digest; another machine's
        # pretraining can give other weights (ran_with says on what this one ran).
        "digest": start_digest(_start_location(out, name)),
        "ran_with": result.get("ran_with"),
    }
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch threads (``None``: as they are), then restore them."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def starts(config: PoolConfig, root: Path) -> dict[str, Path]:
    """The benchmark's start names and their files: ``proxy_static`` and ``proxy_static_dw``
    (model folders whose weights the benchmark loads by name into a model it builds; the
    depthwise folder's config does not record the depthwise tweak) and ``proxy_ddf`` (a
    DDF-layout checkpoint)."""
    out = root / config.key()
    return {f"proxy_{name}": _start_location(out, name) for name in NETWORKS}


def _start_location(out: Path, name: str) -> Path:
    return out / (DDF_FILE if name == "ddf" else name)


def is_pretrained(config: PoolConfig, root: Path, start: str) -> bool:
    """Whether the start ``start`` (a name of :func:`starts`) was written whole: its summary,
    written after it, exists (a pretraining stopped while writing leaves none)."""
    return (root / config.key() / f"{start.removeprefix('proxy_')}.json").is_file()


def quick_config() -> PoolConfig:
    return PoolConfig(domains=2, ids_per_domain=6, epochs=1, batch=(4, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"among {list(NETWORKS)}")
    parser.add_argument("--ids-per-domain", type=int, default=PoolConfig.ids_per_domain)
    parser.add_argument("--domains", type=int, default=PoolConfig.domains)
    parser.add_argument("--epochs", type=int, default=PoolConfig.epochs)
    parser.add_argument("--root", type=Path, default=Path("runs/proxy"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args()
    names = [name.strip() for name in args.networks.split(",")]
    unknown = [name for name in names if name not in NETWORKS]
    if unknown:
        parser.error(f"unknown networks {unknown}; known: {list(NETWORKS)}")
    config = (
        quick_config() if args.quick else PoolConfig(args.domains, args.ids_per_domain, args.epochs)
    )
    print(f"proxy pool {config} (key {config.key()}), proxy pretraining, not ImageNet")
    print("| network | what | top-1 on held-out pool images | s |")
    print("|---|---|---:|---:|")
    for name in names:
        summary = pretrain(name, config, args.root, torch.device(args.device), args.quick)
        print(
            f"| {name} | {summary['what']} | {summary['top1']:.1f} "
            f"({summary['held_out_images']} images) | {summary['seconds']:.0f}"
            + (f" (epochs after {resumed})" if (resumed := summary["resumed_at_epoch"]) else "")
            + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
