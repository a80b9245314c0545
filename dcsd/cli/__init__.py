"""The ``dcsd`` command: ``dcsd train``, ``eval``, ``extract``, ``export``, ``push`` and
``convert-ddf``, each a module of this package with ``add_parser`` and ``run``.

    dcsd train                                         # the synthetic CPU demo
    dcsd train --config configs/bot_dcsd_joint.yaml --data-root /data
    dcsd eval runs/joint/model --datasets synth0,synth1
    dcsd --help, dcsd train --help                     # every option, with its recipe key
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import convert_ddf, evaluate, export, extract, push, train

COMMANDS = {
    "train": train,
    "eval": evaluate,
    "extract": extract,
    "export": export,
    "push": push,
    "convert-ddf": convert_ddf,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``dcsd`` parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="dcsd", description="Domain-Camera-Sample Dynamic networks for person ReID."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        summary = (module.__doc__ or "").strip().splitlines()[0]
        sub = commands.add_parser(name, help=summary, description=module.__doc__)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.set_defaults(command_parser=sub)  # its errors name the command in the usage
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``dcsd`` command with ``argv`` (default: the process's arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    COMMANDS[args.command].run(args, args.command_parser)
