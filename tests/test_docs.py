"""Every ```python block of README.md and docs/*.md runs, and its printed output is checked.

The blocks of one page run in order in one namespace (as a reader would paste them), in an
empty temporary folder, so examples that write ``runs/...`` or ``data/...`` leave nothing behind.
A ```text block that follows a python block with only blank lines between them is the output
that block prints: compared line by line, exactly (trailing spaces and trailing empty lines
aside), except that a line ``...`` in the expected text stands for any number of lines.
```bash blocks are not run. A failing block is reported as ``page:line``; its traceback names
the page and the page's own line numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import traceback
from pathlib import Path

import pytest

import dcsd
from dcsd.data import registry as dataset_registry
from dcsd.models import registry as model_registry

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\S*)\s*$")
ELLIPSIS = "..."


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, its first code line (1-based) and its text."""

    lang: str
    line: int
    code: str
    follows_python: bool  # the previous block is python, with only blank lines between them


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order; an unclosed fence is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    previous_end = None  # index of the line after the previous block's closing fence
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: a ``` fence is never closed")
        adjacent = (
            bool(blocks)
            and blocks[-1].lang == "python"
            and previous_end is not None
            and all(not line.strip() for line in lines[previous_end:i])
        )
        blocks.append(Block(match.group(1), start + 1, "\n".join(lines[start:end]), adjacent))
        previous_end = end + 1
        i = end + 1
    return blocks


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected``, line by line, with ``...`` lines matching any lines."""
    want = [line.rstrip() for line in expected.rstrip().splitlines()]
    got = [line.rstrip() for line in actual.rstrip().splitlines()]
    pattern = "".join(
        r"(?:.*\n)*?" if line == ELLIPSIS else re.escape(line) + r"\n" for line in want
    )
    return re.fullmatch(pattern, "\n".join(got) + "\n") is not None


def test_read_blocks_pairs_python_with_its_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nprint(1)\n```\n\n```text\n1\n```\nprose\n```text\nx\n```\n"
        "```bash\nls\n```\n"
    )
    blocks = read_blocks(page)
    assert [(b.lang, b.line, b.code, b.follows_python) for b in blocks] == [
        ("python", 4, "print(1)", False),
        ("text", 8, "1", True),
        ("text", 12, "x", False),
        ("bash", 15, "ls", False),
    ]
    page.write_text("```python\nprint(1)\n")
    with pytest.raises(ValueError, match=r"page.md:1: a ``` fence is never closed"):
        read_blocks(page)


def test_output_matches_is_exact_except_ellipsis_lines() -> None:
    assert output_matches("a\nb  \n\n", "a\nb\n")
    assert not output_matches("a\nb", "a\nc")
    assert not output_matches("a", "a\nb")
    assert output_matches("a\n...\nd", "a\nb\nc\nd")
    assert output_matches("a\n...\nd", "a\nd")
    assert not output_matches("a\n...\nd", "a\nb\nc")
    assert not output_matches("0.1", "0.10")


@pytest.fixture
def restore_registries():
    """Pages register models and datasets: leave the registries (the registry modules'
    module-level dicts) as they were."""
    saved = [
        (mapping, dict(mapping))
        for module in (model_registry, dataset_registry)
        for name, mapping in vars(module).items()
        if type(mapping) is dict and not name.startswith("__")
    ]
    yield
    for mapping, content in saved:
        mapping.clear()
        mapping.update(content)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_python_blocks_run_and_print_what_the_page_shows(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_registries: None
) -> None:
    name = page.relative_to(ROOT).as_posix()
    blocks = read_blocks(page)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc:{name}"}
    printed: dict[int, str] = {}  # python block index -> what it printed
    for index, block in enumerate(blocks):
        if block.lang == "python":
            # Leading newlines put the block's lines at the page's line numbers in tracebacks.
            code = compile("\n" * (block.line - 1) + block.code, name, "exec")
            buffer = io.StringIO()
            try:
                with contextlib.redirect_stdout(buffer):
                    exec(code, namespace)
            except Exception:
                pytest.fail(
                    f"{name}:{block.line}: the python block raised\n{traceback.format_exc()}",
                    pytrace=False,
                )
            printed[index] = buffer.getvalue()
        elif block.lang == "text" and block.follows_python:
            actual = printed[index - 1]
            if not output_matches(block.code, actual):
                pytest.fail(
                    f"{name}:{block.line}: the output shown differs from what the python block "
                    f"at line {blocks[index - 1].line} printed:\n--- shown\n{block.code}\n"
                    f"--- printed\n{actual}",
                    pytrace=False,
                )


def test_readme_zoo_table_matches_the_registry() -> None:
    """Every named weights of the zoo has its README row: Hub repo, unpublished, paper mAPs."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {
        cells[0].strip("`"): cells
        for line in readme.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    order = ("market1501", "dukemtmc", "cuhk03", "msmt17", "cuhksysu")
    for name in dcsd.list_pretrained():
        card = dcsd.get_pretrained_cfg(name)
        assert name in rows, f"README.md: no zoo row for {name}"
        assert not card.published  # the README says no weights are published
        assert rows[name][4] == f"`{card.hub_id}`"
        mAPs = " / ".join(f"{card.paper_metrics[d]['mAP']:.1f}" for d in order)
        assert rows[name][5] == mAPs
