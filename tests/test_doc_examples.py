"""Every ```python block of the README and the docs runs as written, on its own."""

from __future__ import annotations

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md")
                                     if "_build" not in p.parts)]
BLOCKS = [pytest.param(block, id=f"{page.relative_to(REPO)}[{i}]")
          for page in PAGES
          for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))]


def test_the_pages_hold_examples():
  assert len(BLOCKS) >= 7  # README, getting started, the methods' pages


@pytest.mark.parametrize("block", BLOCKS)
def test_example_runs_as_written(block):
  exec(compile(block, "<example>", "exec"), {})  # pylint: disable=exec-used
