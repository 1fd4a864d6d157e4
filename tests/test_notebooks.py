"""Executes every ``notebooks/*.ipynb`` top to bottom, as a newcomer would run it in Colab.

nbclient drives an ipykernel of *this* interpreter (no Jupyter server), with
``SPARSE_OPTAX_NB_FAST=1`` (notebooks read it to shrink their runs) and ``MPLBACKEND=Agg``. Any
cell error fails the test, and so does running past the per-notebook time limit
(``SPARSE_OPTAX_NB_TIMEOUT`` seconds, default 300). New notebooks are picked up automatically;
``EXPECTED_OUTPUT`` lists lines a notebook must print. Committed notebooks must be valid nbformat
4 with their outputs cleared.
"""

from __future__ import annotations

import os
import pathlib
import time

import ipykernel.kernelspec as ipykernel_kernelspec
import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TIMEOUT_S = float(os.environ.get("SPARSE_OPTAX_NB_TIMEOUT", "300"))
KERNEL = "sparse-optax-tests"

# Lines a notebook must print (in any cell's stdout) after a clean run.
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
}


def _ids(paths):
  return [p.name for p in paths]


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """A kernel spec that runs ipykernel under sys.executable, and the notebooks' environment."""
  ipykernel_kernelspec.write_kernel_spec(tmp_path / "jupyter" / "kernels" / KERNEL)
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched before user dirs
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile, no history
  monkeypatch.setenv("SPARSE_OPTAX_NB_FAST", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  # The checkout under test, even where the notebook's cwd (notebooks/) would hide it.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))


def _stdout(nb) -> str:
  return "".join(
      out.get("text", "")
      for cell in nb.cells
      if cell.cell_type == "code"
      for out in cell.get("outputs", ())
      if out.get("output_type") == "stream" and out.get("name") == "stdout"
  )


def test_notebooks_found():
  assert any(p.name == "quickstart.ipynb" for p in NOTEBOOKS), NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_clean(path):
  nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
  assert nb.nbformat == 4, f"{path.name}: nbformat {nb.nbformat}, want 4"
  nbformat.validate(nb)
  dirty = [i for i, c in enumerate(nb.cells)
           if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
  assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, kernel_env):
  nb = nbformat.read(path, as_version=4)
  deadline = time.monotonic() + TIMEOUT_S

  def remaining(cell):  # nbclient's per-cell timeout: what is left of the notebook's budget
    del cell
    return max(1, int(deadline - time.monotonic()))

  client = nbclient.NotebookClient(
      nb,
      kernel_name=KERNEL,
      timeout_func=remaining,
      startup_timeout=120,
      allow_errors=False,
      resources={"metadata": {"path": str(path.parent)}},  # cwd, as in Jupyter and Colab
  )
  start = time.monotonic()
  try:
    client.execute()
  except nbclient.exceptions.CellTimeoutError as e:
    pytest.fail(f"{path.name} ran past {TIMEOUT_S:.0f} s: {e}")
  elapsed = time.monotonic() - start
  assert elapsed < TIMEOUT_S, f"{path.name} took {elapsed:.0f} s (limit {TIMEOUT_S:.0f} s)"

  stdout = _stdout(nb)
  missing = [line for line in EXPECTED_OUTPUT.get(path.name, ()) if line not in stdout]
  assert not missing, f"{path.name} did not print {missing}; it printed:\n{stdout}"
