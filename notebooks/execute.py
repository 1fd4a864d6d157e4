"""Runs the notebooks and writes their outputs in: ``python notebooks/execute.py [NAME ...]``.

The notebooks are committed with their outputs, so that GitHub and the docs show every figure and
table without running anything. This script makes those outputs: it runs each notebook (all of
them, or the names given) top to bottom with nbclient, in ``notebooks/`` as Jupyter would, with an
ipykernel of this interpreter, and writes it back. A notebook runs with its real settings where
that takes minutes; those in ``FAST_OUTPUTS`` take hours for real, so they run with
``SPARSE_OPTAX_NB_FAST=1`` and their first cell says so.

The outputs are kept fit to commit: no execution timestamps, the notebook's metadata as it was,
and no path of this machine (the checkout is written ``sparse_optax``, the temporary folder
``/tmp``, the home folder ``~``). ``tests/test_notebooks.py`` runs every notebook through
``execute`` in fast mode, on a copy, and checks the committed outputs with ``machine_paths``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import sys
import tempfile
import time

import ipykernel.kernelspec
import jupyter_client
import nbclient
import nbformat

NOTEBOOKS = pathlib.Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent
KERNEL = "sparse-optax-notebooks"
# A real run of these takes hours (CIFAR-10 for hundreds of epochs): their committed outputs are
# those of the fast settings.
FAST_OUTPUTS = frozenset({"cifar_pod.ipynb"})
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")


@contextlib.contextmanager
def kernel_manager(fast: bool, env: dict[str, str] | None = None):
  """A kernel manager for an ipykernel of ``sys.executable`` (never a kernel spec installed
  elsewhere), and the kernel's environment: the checkout on ``PYTHONPATH``, no user IPython
  profile, its own temporary folder, the notebooks' own settings unset except for ``env``."""
  with tempfile.TemporaryDirectory(prefix="notebooks_") as tmp:
    tmp = pathlib.Path(tmp)
    ipykernel.kernelspec.write_kernel_spec(tmp / "kernels" / KERNEL)
    specs = jupyter_client.kernelspec.KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])
    km = jupyter_client.AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    (tmp / "tmp").mkdir()
    kernel_env = {k: v for k, v in os.environ.items()
                  if not k.startswith("SPARSE_OPTAX_NB_") and k != "MPLBACKEND"}  # inline figures
    kernel_env.update(
        PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        IPYTHONDIR=str(tmp / "ipython"),
        TMPDIR=str(tmp / "tmp"),
        **({"SPARSE_OPTAX_NB_FAST": "1"} if fast else {}),
        **(env or {}))
    yield km, kernel_env


def execute(path: pathlib.Path, *, fast: bool, timeout_s: float | None = None,
            env: dict[str, str] | None = None):
  """Runs the notebook at ``path`` from a clean state; returns it (``path`` is left as it is)
  with its outputs, scrubbed of this machine's paths. ``timeout_s`` limits the whole notebook
  (nbclient raises ``CellTimeoutError``); ``env`` adds to the kernel's environment."""
  nb = nbformat.read(path, as_version=4)
  metadata = nb.metadata.copy()  # nbclient adds the kernel's language_info: not worth a diff
  for cell in nb.cells:
    if cell.cell_type == "code":
      cell.outputs, cell.execution_count = [], None
  deadline = None if timeout_s is None else time.monotonic() + timeout_s

  def remaining(cell):  # nbclient's per-cell timeout: what is left of the notebook's budget
    del cell
    return None if deadline is None else max(1, int(deadline - time.monotonic()))

  with kernel_manager(fast, env) as (km, kernel_env):
    client = nbclient.NotebookClient(
        nb, km=km, timeout_func=remaining, startup_timeout=120, allow_errors=False,
        record_timing=False,  # no timestamps in the committed cells
        coalesce_streams=True,  # one output per cell and stream, as Jupyter shows it
        resources={"metadata": {"path": str(path.parent)}})  # cwd: notebooks/, as in Jupyter
    client.execute(env=kernel_env)
    paths = {kernel_env["TMPDIR"]: "/tmp", str(REPO): "sparse_optax", str(pathlib.Path.home()): "~"}
  nb.metadata = metadata
  for cell in nb.cells:
    cell.metadata.pop("execution", None)
    if cell.cell_type == "code":
      cell.outputs = [out for out in map(_without_native_logs, cell.outputs) if out is not None]
    for output in cell.get("outputs", ()):
      _replace_text(output, paths)
  return nb


# What TensorFlow's C++ side logs as it starts (glog lines: time, process id, source line), in
# the kernel's stderr: not the notebook's, and different at every run.
_NATIVE_LOG = re.compile(r"^(?:[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"
                         r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                         r" are written to STDERR)\n?", re.MULTILINE)


def _without_native_logs(output):
  if output.output_type != "stream" or output.name != "stderr":
    return output
  output.text = _NATIVE_LOG.sub("", output.text)
  return output if output.text.strip() else None


def _replace_text(output, paths: dict[str, str]) -> None:
  if "text" in output:
    output.text = _replace(output.text, paths)
  for mime, value in output.get("data", {}).items():
    if mime.startswith("text/") and isinstance(value, str):
      output.data[mime] = _replace(value, paths)


def _replace(text: str, paths: dict[str, str]) -> str:
  for path, name in paths.items():  # the temporary folder first: it may be under home
    text = text.replace(path, name)
  return text


def machine_paths(nb) -> list[str]:
  """The outputs' lines that name this checkout or the home folder."""
  found = (str(REPO), str(pathlib.Path.home()) + os.sep)
  lines = []
  for cell in nb.cells:
    for output in cell.get("outputs", ()):
      texts = [output.get("text", "")] + [v for k, v in output.get("data", {}).items()
                                          if k.startswith("text/") and isinstance(v, str)]
      lines += [line for text in texts for line in text.splitlines()
                if any(path in line for path in found)]
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
  args = parser.parse_args(argv)
  paths = [NOTEBOOKS / name for name in args.names] or sorted(NOTEBOOKS.glob("*.ipynb"))
  for path in paths:
    fast = path.name in FAST_OUTPUTS
    start = time.monotonic()
    nb = execute(path, fast=fast)
    nbformat.write(nb, path)
    print(f"{path.name}: {'fast' if fast else 'real'} settings, "
          f"{time.monotonic() - start:.0f} s", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
