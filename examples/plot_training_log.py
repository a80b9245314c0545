r"""Training curves from a run's log.jsonl: loss parts per epoch, mAP and rank-1 per dataset.

    python examples/plot_training_log.py runs/joint/log.jsonl --out curves.png

Needs the viz extra (matplotlib).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dcsd.evaluate import plot_training_log, read_training_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="log.jsonl written by the Trainer")
    parser.add_argument("--out", type=Path, default=Path("training_curves.png"))
    args = parser.parse_args()
    records = read_training_log(args.log)
    plot_training_log(records, args.out)
    evaluated = sum("eval" in record for record in records)
    print(f"{len(records)} epochs, {evaluated} evaluations -> {args.out}")


if __name__ == "__main__":
    main()
