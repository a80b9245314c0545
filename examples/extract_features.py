"""The ``dcsd extract`` command as a script: ``python examples/extract_features.py ARGS`` runs
``dcsd extract ARGS`` (see ``dcsd extract --help`` and docs/cli.md)."""

import sys

from dcsd.cli import main

if __name__ == "__main__":
    main(["extract", *sys.argv[1:]])
