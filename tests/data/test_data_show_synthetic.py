"""examples/show_synthetic.py writes a grid of rows = (domain, camera), columns = identities."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "show_synthetic.py"


def test_show_synthetic_writes_the_grid(synthetic_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "grid.png"
    argv = [str(SCRIPT), "--root", str(synthetic_root), "--out", str(out), "--identities", "5"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as grid:
        # 12 camera rows of 64x2 pixels with 4-pixel gaps (+ a gap per domain); 5 columns.
        assert grid.size == (90 + 5 * (64 + 4), 12 * (128 + 4) + 3 * 4)
