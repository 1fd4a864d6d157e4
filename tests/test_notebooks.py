"""The notebooks: as committed, with their outputs, and executed top to bottom as a newcomer
would run them in Colab.

Each notebook is committed with the outputs of ``notebooks/execute.py`` (a real run, or the fast
settings for those in ``execute.FAST_OUTPUTS``), so that GitHub and the docs show them. The
committed file must be valid nbformat 4, run in order from a fresh kernel, with every figure, no
error and no path of the machine that ran it; ``EXPECTED_OUTPUT`` lists lines it must show.

``test_notebook_runs`` executes a copy with nbclient through ``execute.execute`` (an ipykernel of
*this* interpreter, no Jupyter server) with ``SPARSE_OPTAX_NB_FAST=1`` (notebooks read it to
shrink their runs). Any cell error fails it, and so does running past the per-notebook time limit
(``SPARSE_OPTAX_NB_TIMEOUT`` seconds, default 300); a cell that prints or draws there must have
committed outputs. New notebooks are picked up automatically. The Colab links must all be built
from the one line of ``notebooks/README.md`` that says where the repository lives.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TIMEOUT_S = float(os.environ.get("SPARSE_OPTAX_NB_TIMEOUT", "300"))


def _load(name):
  """A script of notebooks/ (not a package) as a module."""
  path = REPO / "notebooks" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"notebooks_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


execute = _load("execute")
colab_links = _load("colab_links")

# Lines a notebook must print (in any cell's stdout), in the tests' fast run and as committed.
EXPECTED_OUTPUT = {
    "quickstart.ipynb": (
        "xrda error < plain l1 error: True",
        "xrda exact supports > plain l1 exact supports: True",
        "hand-built chain == so.xrda: True",
        "sparsity target met on every problem: True",
    ),
    "sparse_mnist.ipynb": (
        "density < 1: True",
        "checkpoint non-zeros == metrics.jsonl non-zeros: True",
        "artifact logits == trained model logits: True",
        "no test prediction flipped: True",
    ),
    "cifar_pod.ipynb": (
        "per-device batch x devices == global batch: True",
        "epochs logged == num_epochs: True",
    ),
    "compare_methods.ipynb": (
        "every plotted point has a finite error and compression >= 1: True",
    ),
    "sparse_transformer.ipynb": (
        "thinned logits == model logits: True",
        "2:4 pattern holds on every kernel: True",
        "nm_decompress(nm_compress(w)) == w on every kernel: True",
        "2:4 compressed bytes < dense bytes: True",
    ),
}
# And lines only a real run prints: the committed outputs of a real run show what it reached.
EXPECTED_REAL_OUTPUT = {
    "sparse_mnist.ipynb": ("test accuracy >= 98.5%: True", "compression >= 20x: True"),
    "sparse_transformer.ipynb": ("heads or neurons removed: True",),
}
FAST_NOTE = "Outputs below are from the fast settings"  # the first cell of a FAST_OUTPUTS notebook


def _ids(paths):
  return [p.name for p in paths]


def _stdout(nb) -> str:
  return "".join(
      out.get("text", "")
      for cell in nb.cells
      if cell.cell_type == "code"
      for out in cell.get("outputs", ())
      if out.get("output_type") == "stream" and out.get("name") == "stdout"
  )


def _shows(cell) -> bool:
  """Whether a code cell printed to stdout or displayed something (stderr aside: warnings)."""
  return any(out.output_type in ("display_data", "execute_result")
             or (out.output_type == "stream" and out.name == "stdout") for out in cell.outputs)


def test_notebooks_found():
  assert any(p.name == "quickstart.ipynb" for p in NOTEBOOKS), NOTEBOOKS
  assert execute.FAST_OUTPUTS <= {p.name for p in NOTEBOOKS}, execute.FAST_OUTPUTS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_with_outputs(path):
  nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
  assert nb.nbformat == 4, f"{path.name}: nbformat {nb.nbformat}, want 4"
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  counts = [c.execution_count for c in code]
  rerun = f"run `python notebooks/execute.py {path.name}`"
  assert counts == list(range(1, len(code) + 1)), (
      f"{path.name}: execution counts {counts}, not one clean run in order: {rerun}")
  errors = [i for i, c in enumerate(nb.cells)
            if any(out.output_type == "error" for out in c.get("outputs", ()))]
  assert not errors, f"{path.name}: cells {errors} committed with an error"
  figures = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "plt.show()" in c.source
             and not any("image/png" in out.get("data", {}) for out in c.outputs)]
  assert not figures, f"{path.name}: cells {figures} draw a figure that is not committed: {rerun}"
  timed = [i for i, c in enumerate(nb.cells) if "execution" in c.metadata]
  assert not timed, f"{path.name}: cells {timed} carry execution timestamps: {rerun}"
  paths = execute.machine_paths(nb)
  assert not paths, f"{path.name}: outputs name this machine's paths: {paths[:3]}"

  stdout = _stdout(nb)
  fast = path.name in execute.FAST_OUTPUTS
  expected = EXPECTED_OUTPUT.get(path.name, ())
  if not fast:
    expected += EXPECTED_REAL_OUTPUT.get(path.name, ())
  missing = [line for line in expected if line not in stdout]
  assert not missing, f"{path.name}: the committed outputs do not show {missing}"
  assert ("fast mode" in stdout) == fast, (
      f"{path.name}: committed from the {'fast' if 'fast mode' in stdout else 'real'} settings, "
      f"but FAST_OUTPUTS says {'fast' if fast else 'real'}: {rerun}")
  first = next(c.source for c in nb.cells if c.cell_type == "markdown")
  assert (FAST_NOTE in first) == fast, (
      f"{path.name}: the first cell {'must' if fast else 'must not'} say {FAST_NOTE!r}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path):
  committed_text = path.read_text(encoding="utf-8")
  try:
    nb = execute.execute(path, fast=True, timeout_s=TIMEOUT_S)
  except nbclient.exceptions.CellTimeoutError as e:
    pytest.fail(f"{path.name} ran past {TIMEOUT_S:.0f} s: {e}")
  assert path.read_text(encoding="utf-8") == committed_text, f"{path.name} was rewritten"

  stdout = _stdout(nb)
  missing = [line for line in EXPECTED_OUTPUT.get(path.name, ()) if line not in stdout]
  assert not missing, f"{path.name} did not print {missing}; it printed:\n{stdout}"

  committed = nbformat.reads(committed_text, as_version=4)
  bare = [i for i, (run, kept) in enumerate(zip(nb.cells, committed.cells))
          if run.cell_type == "code" and _shows(run) and not kept.outputs]
  assert not bare, (f"{path.name}: cells {bare} show something when run but were committed "
                    f"without outputs: run `python notebooks/execute.py {path.name}`")


def test_colab_links_follow_the_setting():
  repo, branch = colab_links.setting()
  assert repo == colab_links.PLACEHOLDER or "<" not in repo, repo
  assert not colab_links.check(), colab_links.check()


def test_colab_links_rewrite(tmp_path):
  """A fork's --repo rebuilds every link from the new setting and changes nothing else."""
  for source in [REPO / "notebooks" / "README.md", *NOTEBOOKS]:
    shutil.copy(source, tmp_path / source.name)
  before = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()}
  repo, branch = colab_links.setting(tmp_path)

  changed = colab_links.rewrite("someone/fork-of-it", "dev", tmp_path)
  assert sorted(changed) == sorted(before), changed
  assert colab_links.setting(tmp_path) == ("someone/fork-of-it", "dev")
  assert not colab_links.check(tmp_path), colab_links.check(tmp_path)
  for p in tmp_path.glob("*.ipynb"):
    nbformat.validate(nbformat.read(p, as_version=4))
    text = p.read_text(encoding="utf-8")
    assert colab_links.colab_url(p.name, "someone/fork-of-it", "dev") in text, p.name
    assert f"https://github.com/{repo}" not in text, p.name

  colab_links.rewrite(repo, branch, tmp_path)  # and back: byte for byte
  assert {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()} == before
