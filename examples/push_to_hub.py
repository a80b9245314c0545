"""The ``dcsd push`` command as a script: ``python examples/push_to_hub.py ARGS`` runs
``dcsd push ARGS`` (see ``dcsd push --help`` and docs/cli.md)."""

import sys

from dcsd.cli import main

if __name__ == "__main__":
    main(["push", *sys.argv[1:]])
