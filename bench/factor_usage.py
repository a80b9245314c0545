"""Do the domain and camera factors reach the filters? Reads the conflict benchmark's trained runs.

For every joint ResNet50-DCSD run that ``bench/bench_domain_conflict.py`` trained with the same
options (``--rows``, ``--seeds``, ``--split``, ``--root``, ``--proxy-root``, ...: this script
takes the benchmark's options and names the same runs), it loads the run's last checkpoint and
passes the split's query and gallery images (held-out identities under ``--split val``) through
it. At each of the 16 DCSD layers it takes GAP(X) of every image and measures, with the layer's
own generators (:meth:`DCSDConv.predicted_information`, :meth:`DCSDConv.channel_filters`):

- ``filter variation``: how far the channel filters vary over the images at all,
  ``sqrt(sum |F_n - mean F|^2 / sum |F_n|^2)``: 0 for a static filter, 1 for filters that vary
  about a zero mean (the shares below divide this variation among the domains and cameras),
  with D + Cam and without;
- ``‖D+Cam‖ / ‖GAP(X)‖``: how large the predicted information is beside the sample's own
  features (mean over images of the ratio of the vectors' norms);
- ``filter change``: how much the information moves the channel filters,
  ``‖F(GAP(X) + D + Cam) − F(GAP(X))‖ / ‖F(GAP(X))‖`` (mean over images), F the layer's
  channel branch and its FilterNorm;
- ``domain share``: the share of the channel filters' variance over the images that the
  domain explains (between-domain sum of squares / total), with the information and without;
- ``camera share``: the share the camera explains beyond the domain (between-camera sum of
  squares within each domain / total), with and without;
- the layer's domain and camera classifiers' accuracy on these images (held-out identities).

A filter conditioned on the domain (the paper's claim) shows as a domain share that the
information raises; a filter the information leaves alone, as a change near 0. The report
gives each layer's mean over the seeds and, per row, the mean over the layers (± std over the
seeds); ``--results`` appends it. Rows without a DCSD model or trained per domain are left out
(their filters see one domain). Nothing is trained here: a run without a checkpoint in
``--root`` is named with the command that trains it.

    python bench/factor_usage.py --rows dcsd_joint s --split val --seeds 0 1 2
"""

from __future__ import annotations

import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import torch
import triton
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_domain_conflict import parse_args, row_runs, select_rows  # noqa: E402
from reid_runs import build_model, mean_std, run_folder  # noqa: E402

import dcsd  # noqa: E402
from dcsd.data import MultiDomainDataset  # noqa: E402
from dcsd.engine import build_eval_splits  # noqa: E402
from dcsd.modules import DCSDConv  # noqa: E402


class Column(NamedTuple):
    """One column of the report: its title, the measure it shows, the same measure without
    D+Cam shown beside it (None: none), and whether it is a fraction shown as a percentage."""

    title: str
    key: str
    without: str | None = None
    percent: bool = False


COLUMNS = (
    Column("filter variation, with / without D+Cam", "variation", "variation_without"),
    Column("‖D+Cam‖ / ‖GAP(X)‖", "ratio"),
    Column("filter change", "change"),
    Column("domain share, with / without D+Cam", "domain_share", "domain_share_without"),
    Column("camera share, with / without", "camera_share", "camera_share_without"),
    Column("domain acc.", "domain_acc", percent=True),
    Column("camera acc.", "camera_acc", percent=True),
)


def explained_share(values: torch.Tensor, groups: torch.Tensor, within: torch.Tensor | None = None):
    """The share of the variance of ``values`` (N, ...) over its N rows that ``groups`` (N,)
    explains: the between-group sum of squares over the total. With ``within`` (N,), the
    groups' means are compared with their ``within`` group's mean (a camera beyond its domain);
    ``groups`` must then nest in ``within``. 0 when ``values`` does not vary."""
    flat = values.flatten(1).double()
    total = (flat - flat.mean(0)).square().sum()
    if total == 0:
        return 0.0

    def means(labels: torch.Tensor) -> torch.Tensor:
        _, index = labels.unique(return_inverse=True)
        sums = torch.zeros(int(index.max()) + 1, flat.shape[1], dtype=flat.dtype)
        sums.index_add_(0, index, flat)
        counts = torch.bincount(index).to(flat.dtype)[:, None]
        return (sums / counts)[index]

    reference = flat.mean(0) if within is None else means(within)
    return float((means(groups) - reference).square().sum() / total)


def filter_variation(filters: torch.Tensor) -> float:
    """``sqrt(sum |F_n - mean F|^2 / sum |F_n|^2)`` over the N rows of ``filters`` (N, ...)."""
    flat = filters.flatten(1).double()
    return float(((flat - flat.mean(0)).square().sum() / flat.square().sum()).sqrt())


@torch.no_grad()
def layer_usage(
    layer: DCSDConv, pooled: torch.Tensor, domains: torch.Tensor, cameras: torch.Tensor
) -> dict[str, float]:
    """One layer's measures (the module docstring) for ``pooled`` GAP(X) (N, C) of N images of
    ``domains`` and global ``cameras`` (N,); the information's measures are NaN for S."""
    predicted = layer.predicted_information(pooled)
    with_info = without = layer.channel_filters(pooled)
    nan = float("nan")
    out = {"ratio": nan, "change": nan, "domain_acc": nan, "camera_acc": nan}
    if predicted:
        information = sum(predicted.values())
        with_info = layer.channel_filters(pooled + information)
        out["ratio"] = float((information.norm(dim=1) / pooled.norm(dim=1)).mean())
        change = (with_info - without).flatten(1).norm(dim=1) / without.flatten(1).norm(dim=1)
        out["change"] = float(change.mean())
    for name, classifier, labels in (
        ("domain", layer.domain_classifier, domains),
        ("camera", layer.camera_classifier, cameras),
    ):
        if name in predicted:
            hits = classifier(predicted[name]).argmax(1) == labels
            out[f"{name}_acc"] = float(hits.double().mean())
    out["variation"] = filter_variation(with_info)
    out["variation_without"] = filter_variation(without)
    out["domain_share"] = explained_share(with_info, domains)
    out["domain_share_without"] = explained_share(without, domains)
    out["camera_share"] = explained_share(with_info, cameras, domains)
    out["camera_share_without"] = explained_share(without, cameras, domains)
    return out


@torch.no_grad()
def model_usage(
    model: nn.Module, data: MultiDomainDataset, image_size: tuple[int, int], device: torch.device
) -> dict[str, dict[str, float]]:
    """:func:`layer_usage` of every DCSD layer of ``model`` (by name) on the query and gallery
    images of ``data``'s domains."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, DCSDConv)}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no DCSD layer")
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    hooks = [
        layer.register_forward_pre_hook(
            lambda _, inputs, name=name: pooled[name].append(inputs[0].float().mean((2, 3)).cpu())
        )
        for name, layer in layers.items()
    ]
    domains, cameras = [], []
    model.eval().to(device)
    try:
        for split in build_eval_splits(data, image_size=image_size, num_workers=0).values():
            for loader in (split.query, split.gallery):
                for batch in loader:
                    model(batch["image"].to(device))
                    batch_domains = batch["domain"].tolist()
                    domains += batch_domains
                    cameras += [
                        data.global_camera_id(domain, camera)
                        for domain, camera in zip(
                            batch_domains, batch["camid"].tolist(), strict=True
                        )
                    ]
    finally:
        for hook in hooks:
            hook.remove()
    domain_labels, camera_labels = torch.tensor(domains), torch.tensor(cameras)
    model.cpu()
    return {
        name: layer_usage(layer, torch.cat(pooled[name]), domain_labels, camera_labels)
        for name, layer in layers.items()
    }


def _number(value: float, percent: bool = False) -> str:
    if value != value:  # NaN: a measure the row's factors do not have
        return "–"
    return f"{value * 100:.0f}%" if percent else f"{value:.2f}"


def _mean_std(values: list[float], percent: bool = False) -> str:
    if values[0] != values[0]:
        return "–"
    scale = 100 if percent else 1
    mean, std = (value * scale for value in mean_std(values))
    return f"{mean:.0f}% ± {std:.0f}" if percent else f"{mean:.2f} ± {std:.2f}"


def report_row(name: str, usages: list[dict[str, dict[str, float]]]) -> list[str]:
    """The markdown table of one row: each layer's measures as the mean over the seeds'
    ``usages`` (one :func:`model_usage` each), then the mean over the layers ± std over seeds."""

    def layer_cell(column: Column, measures: list[dict[str, float]]) -> str:
        def mean(key: str) -> float:
            return statistics.fmean(m[key] for m in measures)

        text = _number(mean(column.key), column.percent)
        if column.without is not None:
            text += " / " + _number(mean(column.without))
        return text

    def summary_cell(column: Column, per_seed: list[dict[str, float]]) -> str:
        text = _mean_std([s[column.key] for s in per_seed], column.percent)
        if column.without is not None:
            text += " / " + _mean_std([s[column.without] for s in per_seed])
        return text

    lines = [
        f"#### {name} ({len(usages)} seed(s))",
        "",
        "| layer | " + " | ".join(column.title for column in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for layer in usages[0]:
        measures = [u[layer] for u in usages]
        lines.append(f"| {layer} | " + " | ".join(layer_cell(c, measures) for c in COLUMNS) + " |")
    keys = next(iter(usages[0].values()))
    per_seed = [
        {key: statistics.fmean(m[key] for m in usage.values()) for key in keys} for usage in usages
    ]
    summary = " | ".join(summary_cell(column, per_seed) for column in COLUMNS)
    lines.append(f"| **mean over the layers** | {summary} |")
    return lines


def main() -> None:
    args, datasets = parse_args(description=__doc__.splitlines()[0])
    if args.versus_starts:
        raise SystemExit(
            "--versus-start: the benchmark's report option; this script reads the checkpoints "
            "of the runs trained here, one pretraining at a time"
        )
    device = torch.device(args.device)
    proxy_starts = args.starts
    rows = select_rows(args.rows, static_only=False, without_static=args.rows is not None)
    left_out = [row.key for row in rows if row.per_domain or not row.model.endswith("_dcsd")]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M+00:00")
    lines = [
        "## Do the domain and camera factors reach the filters? (bench/factor_usage.py)",
        "",
        f"- this call: {device}, torch {torch.__version__}, triton {triton.__version__}; {stamp}",
        f"- runs: the conflict benchmark's, {args.data_label}, {args.split} split, "
        f"{args.epochs} epochs, seeds {args.seeds}; measured on the {args.split} split's query "
        "and gallery images",
        f"- cameras per domain: {', '.join(f'{d.name} {d.num_cameras}' for d in datasets)} "
        "(a camera classifier that knows the domain and guesses the camera scores 1 / that)",
        f"- command: `python bench/factor_usage.py {' '.join(sys.argv[1:])}`",
    ]
    if left_out:
        lines.append(f"- left out (not joint DCSD rows): {', '.join(left_out)}")
    for row in rows:
        if row.key in left_out:
            continue
        usages = []
        for seed in args.seeds:
            ((spec, group),) = row_runs(row, datasets, args, seed)
            data = MultiDomainDataset(group)
            folder = run_folder(spec, build_model(spec, data), args.root, proxy_starts)
            checkpoints = folder / "train" / "checkpoints"
            if not (folder / "result.json").is_file() or not checkpoints.is_dir():
                raise SystemExit(
                    f"{row.key}, seed {seed}: no finished run with checkpoints in {folder}; "
                    f"train it here with `python bench/bench_domain_conflict.py --rows {row.key} "
                    f"--without-static --seeds {seed} --split {args.split}` and the same options"
                    + (
                        " (the ledger keeps no checkpoints: that needs the start file, not "
                        "--recorded-start)"
                        if row.init in args.recorded_starts
                        else ""
                    )
                )
            model = dcsd.load_model(checkpoints)
            usages.append(model_usage(model, data, args.image_size, device))
        lines += ["", *report_row(row.name, usages)]
    text = "\n".join(lines)
    print(text)
    if args.results:
        with args.results.open("a") as out:
            out.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
