"""The ``dcsd train`` command as a script: ``python examples/train_joint.py ARGS`` runs
``dcsd train ARGS`` (see ``dcsd train --help`` and docs/cli.md)."""

import sys

from dcsd.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
