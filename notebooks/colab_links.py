"""The notebooks' Colab links, built from where the repository lives on GitHub.

One line of ``notebooks/README.md`` says where that is::

  Repository: `OWNER/NAME`, branch `BRANCH`

and every link to the repository is built from it: each notebook's "Open in Colab" badge, the
Colab column of the README's table, and the ``REPO_URL`` that a notebook clones or installs in
Colab. Until the holder of the repository sets it, it reads ``<org>/sparse_optax`` (``PLACEHOLDER``)
and the links do not open.

  python notebooks/colab_links.py --repo OWNER/NAME [--branch main]   # set it, rewrite the links
  python notebooks/colab_links.py                                     # check the links follow it
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

NOTEBOOKS = pathlib.Path(__file__).resolve().parent
PLACEHOLDER = "<org>/sparse_optax"
_PART = r"[^/\s\"\\()`<>]+|<org>"  # an owner, a name or a branch; or the placeholder's owner
SETTING = re.compile(rf"^Repository: `(?P<repo>(?:{_PART})/(?:{_PART}))`, "
                     rf"branch `(?P<branch>{_PART})`$", re.MULTILINE)
COLAB = re.compile(rf"https://colab\.research\.google\.com/github/(?P<repo>(?:{_PART})/(?:{_PART}))"
                   rf"/blob/(?P<branch>{_PART})/notebooks/(?P<name>[\w.-]+\.ipynb)")
# In a notebook's JSON the quotes are escaped: REPO_URL = \"https://github.com/OWNER/NAME\".
REPO_URL = re.compile(rf"(?P<head>REPO_URL = \\?\")https://github\.com/"
                      rf"(?P<repo>(?:{_PART})/(?:{_PART}))(?P<tail>\\?\")")


def setting(folder: pathlib.Path = NOTEBOOKS) -> tuple[str, str]:
  """(OWNER/NAME, branch) from ``folder/README.md``."""
  match = SETTING.search((folder / "README.md").read_text(encoding="utf-8"))
  if match is None:
    raise ValueError(f"{folder / 'README.md'} has no line 'Repository: `OWNER/NAME`, branch `B`'")
  return match["repo"], match["branch"]


def colab_url(name: str, repo: str, branch: str) -> str:
  return f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{name}"


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
  return [folder / "README.md", *sorted(folder.glob("*.ipynb"))]


def rewrite(repo: str, branch: str = "main", folder: pathlib.Path = NOTEBOOKS) -> list[str]:
  """Sets the README's line to ``repo`` and ``branch`` and rebuilds every link from it; returns
  the names of the files it changed. Only the links change: the rest of each file, its JSON
  layout and outputs included, stays byte for byte."""
  if not re.fullmatch(rf"(?:{_PART})/(?:{_PART})", repo) or not re.fullmatch(_PART, branch):
    raise ValueError(f"want --repo OWNER/NAME and a branch without '/', got {repo!r}, {branch!r}")
  setting(folder)  # the line must be there to be set
  changed = []
  for path in _files(folder):
    text = path.read_text(encoding="utf-8")
    new = SETTING.sub(f"Repository: `{repo}`, branch `{branch}`", text)
    new = COLAB.sub(lambda m: colab_url(m["name"], repo, branch), new)
    new = REPO_URL.sub(lambda m: f"{m['head']}https://github.com/{repo}{m['tail']}", new)
    if new != text:
      path.write_text(new, encoding="utf-8")
      changed.append(path.name)
  return changed


def check(folder: pathlib.Path = NOTEBOOKS) -> list[str]:
  """What does not follow the setting: a link built from another repository or branch, a Colab
  link to a notebook that does not exist, a notebook without its own badge or ``REPO_URL``."""
  repo, branch = setting(folder)
  notebooks = {p.name for p in folder.glob("*.ipynb")}
  problems = []
  for path in _files(folder):
    text = path.read_text(encoding="utf-8")
    links = list(COLAB.finditer(text))
    for m in links:
      if (m["repo"], m["branch"]) != (repo, branch):
        problems.append(f"{path.name}: {m[0]} is not built from {repo}, branch {branch}")
      if m["name"] not in notebooks:
        problems.append(f"{path.name}: {m[0]} opens a notebook that does not exist")
    urls = list(REPO_URL.finditer(text))
    problems += [f"{path.name}: REPO_URL {m['repo']} is not {repo}" for m in urls
                 if m["repo"] != repo]
    if path.suffix == ".ipynb":
      if not any(m["name"] == path.name for m in links):
        problems.append(f"{path.name}: no Colab badge that opens it")
      if not urls:
        problems.append(f"{path.name}: no REPO_URL line")
  names = {m["name"] for m in COLAB.finditer((folder / "README.md").read_text(encoding="utf-8"))}
  problems += [f"README.md: no Colab link to {name}" for name in sorted(notebooks - names)]
  return problems


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repo", help="OWNER/NAME on GitHub: set it and rewrite every link")
  parser.add_argument("--branch", default=None, help="the branch Colab opens (default: as set)")
  args = parser.parse_args(argv)
  if args.repo:
    changed = rewrite(args.repo, args.branch or setting()[1])
    print(f"rewrote {', '.join(changed) or 'nothing (already set)'}")
  elif args.branch:
    parser.error("--branch goes with --repo")
  problems = check()
  repo, branch = setting()
  print("\n".join(problems) or f"every link is built from {repo}, branch {branch}")
  if repo == PLACEHOLDER:
    print(f"the setting is still {PLACEHOLDER}: run with --repo OWNER/NAME for links that open")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
