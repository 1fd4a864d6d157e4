"""config.sharding="fsdp" against "replicated" on 8 fake CPU devices, for xrda in every
structure: the same params to float tolerance, with params and optimizer state really split.
The device count is fixed when JAX starts, so the runs go in a subprocess (this file's worker)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STRUCTURES = ("unstructured", "kernel", "channel")


def test_fsdp_axis():
  from train import steps
  assert steps.fsdp_axis((3, 3, 16, 32), 8) == 3  # the largest divisible axis
  assert steps.fsdp_axis((32, 16), 8) == 0
  assert steps.fsdp_axis((16, 16), 8) == 0  # the first of equals
  assert steps.fsdp_axis((10,), 8) is None  # replicated: nothing divides
  assert steps.fsdp_axis((), 8) is None
  assert steps.fsdp_axis((3, 3, 3, 8), 8) == 3


def test_fsdp_gives_the_replicated_params_on_8_devices(tmp_path):
  from tests import xla_flags
  env = xla_flags.env(8, PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-5000:]
  from tests.test_train import _latest_checkpoint
  report = json.loads((tmp_path / "report.json").read_text())
  for structure in STRUCTURES:
    _, fsdp = _latest_checkpoint(tmp_path / f"fsdp_{structure}")
    _, replicated = _latest_checkpoint(tmp_path / f"replicated_{structure}")
    for a, b in zip(*(jax_leaves(t["params"]) for t in (fsdp, replicated))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=structure)
    assert np.count_nonzero(np.concatenate([x.ravel() for x in jax_leaves(fsdp["params"])])) < (
        sum(x.size for x in jax_leaves(fsdp["params"]))), structure  # it did sparsify
    # per-device bytes of params and optimizer state: split by fsdp
    sizes = report[structure]
    assert sizes["fsdp"] < 0.5 * sizes["replicated"], sizes


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def _per_device_bytes(state):
  import jax
  device = jax.devices()[0]
  return sum(shard.data.nbytes for x in jax.tree.leaves(state) for shard in x.addressable_shards
             if shard.device == device)


def _worker(workdir: str) -> None:
  import jax
  assert jax.device_count() == 8, jax.devices()
  from tests.test_train import _run
  from train import steps
  report = {}
  original = steps.state_shardings

  for structure in STRUCTURES:
    sizes = {}
    for mode in ("replicated", "fsdp"):
      def spy(state, mesh, mode_, sizes=sizes, mode=mode):
        shardings = original(state, mesh, mode_)
        placed = jax.device_put(state, shardings)
        sizes[mode] = _per_device_bytes({k: placed[k] for k in ("params", "opt_state")})
        return shardings
      steps.state_shardings = spy
      _run(os.path.join(workdir, f"{mode}_{structure}"), sharding=mode, structure=structure,
           num_epochs=1, batch_size=32, eval_batch_size=64, l1=3e-3)
    report[structure] = sizes
  steps.state_shardings = original
  Path(workdir, "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  _worker(sys.argv[1])
  sys.exit(0)
