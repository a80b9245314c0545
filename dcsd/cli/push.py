r"""Upload a trained dcsd model to the Hugging Face Hub as config.json + model.safetensors.

    dcsd push runs/joint5/model --repo-id you/resnet50_dcsd-joint5     # a run's model folder
    dcsd push runs/joint5/checkpoints/epoch_0120 --repo-id you/name   # a checkpoint's model

Log in first (hf auth login, or HF_TOKEN). --save-only DIR writes the folder that would be
uploaded and touches no network. Others then load it with dcsd.load_model("you/name").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dcsd


def add_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcsd push``."""
    parser.add_argument(
        "checkpoint", type=Path, help="model folder (config.json + model.safetensors)"
    )
    parser.add_argument("--repo-id", help="Hub repository, e.g. you/resnet50_dcsd-joint5")
    parser.add_argument(
        "--drop-classifier",
        action="store_true",
        help="upload without the identity classifier (an embedding model, smaller)",
    )
    parser.add_argument("--private", action="store_true", help="create a private repository")
    parser.add_argument("--branch", default=None, help="branch to push to (default main)")
    parser.add_argument("--commit-message", default="Upload dcsd model")
    parser.add_argument(
        "--save-only", type=Path, default=None, help="write the upload folder here, do not push"
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``dcsd push``: load the model folder, then upload it (or only write it)."""
    if args.repo_id is None and args.save_only is None:
        parser.error("give --repo-id (to push) or --save-only DIR")
    overrides = {"num_classes": 0} if args.drop_classifier else {}
    model = dcsd.load_model(args.checkpoint, **overrides)
    print(f"loaded {model.config}")
    if args.save_only is not None:
        model.save_pretrained(args.save_only)
        print(f"wrote {sorted(p.name for p in args.save_only.iterdir())} to {args.save_only}")
        return
    url = model.push_to_hub(
        args.repo_id,
        private=args.private,
        branch=args.branch,
        commit_message=args.commit_message,
    )
    print(f"pushed to {url}")
