"""``dcsd convert-ddf`` (the installed command; see ``dcsd convert-ddf --help`` and docs/cli.md), as a script.

    python examples/convert_ddf.py --help
"""

import sys

from dcsd.cli import main

if __name__ == "__main__":
    main(["convert-ddf", *sys.argv[1:]])
