"""Same result on one device, on a data mesh of 8 fake CPUs under jax.jit, under jax.pmap, and
with params and state sharded over a 2-D mesh (FSDP-style)."""

import pathlib
import subprocess
import sys

from tests import xla_flags
from tests.optimizer_table import IDS

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_optimizer_single_mesh_pmap_fsdp_agree():
  env = xla_flags.env(8)
  proc = subprocess.run([sys.executable, "-m", "tests.multidevice_check"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for name in IDS:
    assert f"{name}: single == mesh == pmap == fsdp" in proc.stdout, proc.stdout
