"""``python -m dcsd.cli`` (e.g. under ``torchrun -m``) runs the ``dcsd`` command."""

from dcsd.cli import main

main()
