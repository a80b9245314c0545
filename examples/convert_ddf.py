"""The ``dcsd convert-ddf`` command as a script: ``python examples/convert_ddf.py ARGS`` runs
``dcsd convert-ddf ARGS`` (see ``dcsd convert-ddf --help`` and docs/cli.md)."""

import sys

from dcsd.cli import main

if __name__ == "__main__":
    main(["convert-ddf", *sys.argv[1:]])
