"""Writes each `<name>.inv` here from its `<name>.txt`, the readable listing kept beside it.

    python docs/_inventories/build.py          # rewrite the .inv files
    python docs/_inventories/build.py --check  # exit 1 if one is out of date

A `.txt` is what Sphinx's objects.inv holds once decompressed: four header lines, then one
line per object, `name domain:role priority uri display-name`, the uri relative to the docs'
root given in docs/conf.py's `intersphinx_mapping`, `$` standing for the name and `-` as the
display name meaning the name itself. Each lists only the external objects these docs refer
to, with the address of their real documentation page: add a line when a page or docstring
names a new one (the build says which reference did not resolve).
"""

import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER_LINES = 4


def inventory(text: str) -> bytes:
  """The objects.inv bytes of a listing: the header as is, the object lines compressed."""
  lines = text.splitlines(keepends=True)
  header, body = lines[:HEADER_LINES], lines[HEADER_LINES:]
  if not header[0].startswith("# Sphinx inventory version 2"):
    raise ValueError("an inventory listing starts with '# Sphinx inventory version 2'")
  body = [line for line in body if line.strip() and not line.startswith("#")]
  return "".join(header).encode() + zlib.compress("".join(body).encode(), 9)


def stale() -> list[Path]:
  """The .inv files that do not match their .txt."""
  return [txt.with_suffix(".inv") for txt in sorted(HERE.glob("*.txt"))
          if not txt.with_suffix(".inv").exists()
          or txt.with_suffix(".inv").read_bytes() != inventory(txt.read_text())]


def main() -> None:
  if "--check" in sys.argv[1:]:
    out_of_date = stale()
    for path in out_of_date:
      print(f"{path.name} is out of date: run python docs/_inventories/build.py")
    sys.exit(1 if out_of_date else 0)
  for txt in sorted(HERE.glob("*.txt")):
    txt.with_suffix(".inv").write_bytes(inventory(txt.read_text()))
    print(f"wrote {txt.with_suffix('.inv').name}")


if __name__ == "__main__":
  main()
