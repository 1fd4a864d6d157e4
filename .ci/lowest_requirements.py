"""Prints the library's dependencies pinned to the lowest versions pyproject.toml allows."""

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"]:
  match = re.match(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][^,;\s]*)", requirement)
  if match is None:
    raise SystemExit(f"{requirement!r} has no lower bound to test")
  print(f"{match[1]}=={match[2]}")
