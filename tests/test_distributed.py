"""Launching on N machines without a cluster manager (train/distributed.py): the resolution of
config fields and environment variables, and two real processes on localhost (CPU collectives,
2 fake devices each) that train, are interrupted, and resume. Run as a module, this file is
those processes' worker."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

REPO = Path(__file__).resolve().parents[1]


def _config(**fields):
  config = ml_collections.ConfigDict(dict(distributed=False, coordinator_address=None,
                                          num_processes=None, process_id=None))
  config.update(fields)
  return config


def test_resolve_single_process_and_auto_detection():
  from train.distributed import resolve
  assert resolve(_config(), {}) is None
  assert resolve(_config(distributed=True), {}) == {}  # JAX detects the cluster


def test_resolve_config_wins_over_the_environment():
  from train.distributed import resolve
  environ = {"JAX_COORDINATOR_ADDRESS": "10.0.0.9:99", "JAX_NUM_PROCESSES": "4",
             "JAX_PROCESS_ID": "3"}
  assert resolve(_config(), environ) == dict(coordinator_address="10.0.0.9:99", num_processes=4,
                                             process_id=3)
  assert resolve(_config(coordinator_address="10.0.0.1:1234", process_id=1), environ) == dict(
      coordinator_address="10.0.0.1:1234", num_processes=4, process_id=1)


@pytest.mark.parametrize("fields,environ,message", [
    (dict(num_processes=2, process_id=0), {}, r"without a coordinator: set config.coordinator"),
    (dict(coordinator_address="10.0.0.1"), {}, r"must be host:port"),
    (dict(coordinator_address="10.0.0.1:1234"), {}, r"needs config.num_processes .* and "
                                                    r"config.process_id"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), {}, r"\[0, num_processes\)"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), {}, r"must be >= 1"),
    (dict(), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two",
              "JAX_PROCESS_ID": "0"}, r"\$JAX_NUM_PROCESSES must be an integer"),
])
def test_resolve_refuses_incomplete_or_bad_launch_fields(fields, environ, message):
  from train.distributed import resolve
  with pytest.raises(ValueError, match=message):
    resolve(_config(**fields), environ)


def test_a_cluster_manager_may_supply_the_count_and_id():
  from train.distributed import resolve
  assert resolve(_config(coordinator_address="h:1"), {"SLURM_JOB_ID": "7"}) == dict(
      coordinator_address="h:1")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(worker_args: list[str], num_processes: int = 2, devices_per_process: int = 2,
           timeout: float = 600) -> list[subprocess.CompletedProcess]:
  """Runs ``python -m tests.test_distributed *worker_args`` as ``num_processes`` processes of
  one JAX job on localhost, as machines with no cluster manager are started."""
  address = f"localhost:{_free_port()}"
  procs = []
  for index in range(num_processes):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
               JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(num_processes),
               JAX_PROCESS_ID=str(index))
    procs.append(subprocess.Popen([sys.executable, "-m", "tests.test_distributed", *worker_args],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  results = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=timeout)
      results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
  finally:
    for proc in procs:
      proc.kill()
  return results


def test_two_processes_train_interrupt_and_resume(tmp_path):
  whole = launch([str(tmp_path / "whole"), "0"])
  assert all(r.returncode == 0 for r in whole), whole[0].stderr[-3000:] + whole[1].stderr[-3000:]
  cut = launch([str(tmp_path / "cut"), "6"])  # both processes stop after step 6
  assert all(r.returncode == 130 for r in cut), cut[0].stderr[-3000:]
  resumed = launch([str(tmp_path / "cut"), "0"])
  assert all(r.returncode == 0 for r in resumed), resumed[0].stderr[-3000:]
  finals = [json.loads(r.stdout.strip().splitlines()[-1]) for r in whole + resumed]
  assert all(f["process_count"] == 2 and f["device_count"] == 4 for f in finals)
  assert finals[0] == finals[1]  # every process reports the same run
  assert finals[2] == finals[3] == finals[0]  # and the resumed one is the uninterrupted one
  from tests.test_train import _latest_checkpoint
  import jax
  import numpy as np
  _, a = _latest_checkpoint(tmp_path / "whole")
  _, b = _latest_checkpoint(tmp_path / "cut")
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _worker(workdir: str, stop_at: int) -> None:
  """One process of the job: a short run, stopped (exit 130) after ``stop_at`` steps if > 0."""
  from tests.test_train import _run  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  def stop(step):
    if step == stop_at:
      raise KeyboardInterrupt

  try:
    final = _run(workdir, hooks=[stop], batch_size=32, eval_batch_size=64)
  except KeyboardInterrupt:
    sys.exit(130)
  print(json.dumps({"process_count": jax.process_count(), "device_count": jax.device_count(),
                    "step": final["step"], "test_accuracy": final["test_accuracy"],
                    "train_loss": final["train_loss"], "density": final["density"]}))


if __name__ == "__main__":
  _worker(sys.argv[1], int(sys.argv[2]))
