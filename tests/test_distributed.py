"""Launching on N machines without a cluster manager (train/distributed.py): the resolution of
config fields and environment variables, and real processes on localhost (CPU collectives, 2
fake devices each) that agree on a collective, and that train, are interrupted, and resume.
Run as a module, this file is those processes' worker (see ``launch``)."""

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_collections
import pytest

from tests import xla_flags

REPO = Path(__file__).resolve().parents[1]
_LAUNCH_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _config(**fields):
  config = ml_collections.ConfigDict(dict(distributed=False, coordinator_address=None,
                                          num_processes=None, process_id=None))
  config.update(fields)
  return config


def test_launch_fields_are_config_fields():
  from train.configs import default
  from train.distributed import LAUNCH_FIELDS, resolve
  config = default.get_config()
  assert all(field in config for field in LAUNCH_FIELDS)
  assert resolve(config, {}) is None  # the default is one process


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
  assert resolve(_config(distributed=True), environ)["process_id"] == 3


@pytest.mark.parametrize("address", ["10.0.0.1:1234", "localhost:8476", "node-0.cluster:1",
                                     "[::1]:1234"])
def test_resolve_accepts_host_port(address):
  from train.distributed import resolve
  assert resolve(_config(coordinator_address=address, num_processes=2, process_id=1),
                 {})["coordinator_address"] == address


@pytest.mark.parametrize("fields,environ,message", [
    (dict(num_processes=2, process_id=0), {}, r"without a coordinator: set config.coordinator"),
    (dict(coordinator_address="10.0.0.1"), {}, r"config.coordinator_address must be host:port"),
    (dict(coordinator_address="10.0.0.1:port", num_processes=2, process_id=0), {},
     r"must be host:port"),
    (dict(coordinator_address="10.0.0.1:1234"), {}, r"needs config.num_processes .* and "
                                                    r"config.process_id"),
    (dict(coordinator_address="h:1", num_processes=2), {}, r"needs config.process_id \(or "
                                                           r"\$JAX_PROCESS_ID\)"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), {},
     r"config.process_id must lie in \[0, num_processes\)"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=-1), {}, r"\[0, num_processes"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), {},
     r"config.num_processes must be >= 1"),
    (dict(), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two",
              "JAX_PROCESS_ID": "0"}, r"\$JAX_NUM_PROCESSES must be an integer"),
])
def test_resolve_refuses_incomplete_or_bad_launch_fields(fields, environ, message):
  from train.distributed import resolve
  with pytest.raises(ValueError, match=message):
    resolve(_config(**fields), environ)


@pytest.mark.parametrize("variable", ["SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                                      "KUBERNETES_SERVICE_HOST"])
def test_a_cluster_manager_may_supply_the_count_and_id(variable):
  from train.distributed import resolve
  assert resolve(_config(coordinator_address="h:1"), {variable: "7"}) == dict(
      coordinator_address="h:1")


def test_initialize_calls_jax_once_and_only_when_asked(monkeypatch):
  import jax
  from train import distributed
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  monkeypatch.setattr(distributed, "_initialized", False)
  for variable in (*_LAUNCH_ENV, *distributed._CLUSTER_ENV):
    monkeypatch.delenv(variable, raising=False)
  distributed.initialize(_config())
  assert not calls  # one process: JAX is left alone
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:1")
  with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES"):
    distributed.initialize(_config())
  assert not calls
  config = _config(num_processes=2, process_id=1)
  distributed.initialize(config)
  distributed.initialize(config)
  assert calls == [dict(coordinator_address="h:1", num_processes=2, process_id=1)]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(worker_args: list[str], num_processes: int = 2, devices_per_process: int = 2,
           timeout: float = 600, via: str = "env") -> list[subprocess.CompletedProcess]:
  """Runs ``python -m tests.test_distributed *worker_args`` as ``num_processes`` processes of
  one JAX job on localhost, as machines with no cluster manager are started.

  Args:
    worker_args: the worker's arguments (see ``_main``).
    num_processes: how many processes the job has.
    devices_per_process: fake CPU devices in each process.
    timeout: seconds for all of them to finish; then they are killed and TimeoutError says
      which were still running, with the end of their stderr.
    via: how each process learns the coordinator, the process count and its id: ``"env"``
      (``$JAX_COORDINATOR_ADDRESS``, ...) or ``"config"`` (``--config.coordinator_address=...``
      arguments, which the worker sets in its config).

  Returns:
    Each process's result, in process id order.
  """
  if via not in ("env", "config"):
    raise ValueError(f"via must be 'env' or 'config'; got {via!r}.")
  address = f"localhost:{_free_port()}"
  procs, outputs = [], []
  try:
    for index in range(num_processes):
      fields = dict(coordinator_address=address, num_processes=num_processes, process_id=index)
      env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
      env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
                 XLA_FLAGS=xla_flags.flags(devices_per_process, fast=True))
      args = list(worker_args)
      if via == "env":
        env.update(zip(_LAUNCH_ENV, map(str, fields.values())))
      else:
        args += [f"--config.{k}={v}" for k, v in fields.items()]
      # Files, not pipes: a process blocked on a full pipe would stall its peers' collectives.
      out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
      outputs.append((out, err))
      procs.append(subprocess.Popen([sys.executable, "-m", "tests.test_distributed", *args],
                                    cwd=REPO, env=env, stdout=out, stderr=err, text=True))
    deadline = time.monotonic() + timeout
    try:
      for proc in procs:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      for proc in procs:
        if proc.poll() is None:
          proc.kill()
      tails = []
      for index, (proc, (_, err)) in enumerate(zip(procs, outputs)):
        proc.wait()
        err.seek(0)
        tails.append(f"--- process {index} (exit {proc.returncode}) ---\n{err.read()[-2000:]}")
      raise TimeoutError(f"{' '.join(worker_args)}: the {num_processes} processes were not done "
                         f"after {timeout}s and were killed.\n" + "\n".join(tails)) from None
    results = []
    for proc, (out, err) in zip(procs, outputs):
      out.seek(0)
      err.seek(0)
      results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read(),
                                                 err.read()))
    return results
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    for out, err in outputs:
      out.close()
      err.close()


def _stderr(results) -> str:
  return "\n".join(f"--- process {i} (exit {r.returncode}) ---\n{r.stderr[-3000:]}"
                   for i, r in enumerate(results))


def test_two_processes_agree_on_a_collective():
  results = launch(["collective"], via="config", timeout=180)
  assert all(r.returncode == 0 for r in results), _stderr(results)
  finals = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
  assert [f["process_index"] for f in finals] == [0, 1]
  for final in finals:
    assert final["process_count"] == 2 and final["device_count"] == 4
    assert final["local_device_count"] == 2
    # Process 0 holds 0, 1 and process 1 holds 2, 3: only a cross-process sum gives 6.
    assert final["sum"] == final["psum"] == 6.0


def test_two_processes_train_interrupt_and_resume(tmp_path):
  whole = launch([str(tmp_path / "whole"), "0"])
  assert all(r.returncode == 0 for r in whole), _stderr(whole)
  # Process 1 alone gets SIGTERM after step 3 of 4, and both stop there with a checkpoint.
  # Told by config, so the rerun (told by the environment, at another port) resumes with
  # different launch fields.
  cut = launch([str(tmp_path / "cut"), "3"], via="config")
  assert all(r.returncode == 143 for r in cut), _stderr(cut)
  from tests.test_train import _latest_checkpoint
  assert _latest_checkpoint(tmp_path / "cut")[0] == 3
  resumed = launch([str(tmp_path / "cut"), "0"])
  assert all(r.returncode == 0 for r in resumed), _stderr(resumed)
  finals = [json.loads(r.stdout.strip().splitlines()[-1]) for r in whole + resumed]
  assert all(f["process_count"] == 2 and f["device_count"] == 4 for f in finals)
  assert finals[0] == finals[1]  # every process reports the same run
  assert finals[2] == finals[3] == finals[0]  # and the resumed one is the uninterrupted one
  import jax
  import numpy as np
  _, a = _latest_checkpoint(tmp_path / "whole")
  _, b = _latest_checkpoint(tmp_path / "cut")
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _collective_worker(overrides: dict) -> None:
  """One process of the job: starts JAX from the config, then sums over all its devices."""
  from train import distributed
  from train.configs import default
  config = default.get_config()
  config.update(overrides)
  distributed.initialize(config)
  distributed.initialize(config)  # a second call is a no-op
  import jax
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  mesh = jax.make_mesh((jax.device_count(),), ("data",), (jax.sharding.AxisType.Auto,))
  local = np.arange(jax.local_device_count(), dtype=np.float32)
  local += jax.process_index() * jax.local_device_count()
  x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
  total = jax.jit(lambda v: v.sum(), out_shardings=NamedSharding(mesh, P()))(x)
  psum = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v.sum(), "data"), mesh=mesh,
                               in_specs=P("data"), out_specs=P()))(x)
  print(json.dumps({"process_index": jax.process_index(), "process_count": jax.process_count(),
                    "device_count": jax.device_count(),
                    "local_device_count": jax.local_device_count(),
                    "sum": float(total), "psum": float(psum)}))


def _worker(workdir: str, stop_at: int, overrides: dict) -> None:
  """One process of the job: a short run. If ``stop_at`` > 0, process 1 alone gets SIGTERM
  after that step, and every process must stop there (exit 143)."""
  from tests.test_train import _run  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  def stop(step):
    if step == stop_at and jax.process_index() == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  try:
    final = _run(workdir, hooks=[stop], batch_size=32, eval_batch_size=64, num_epochs=1,
                 **overrides)
  except KeyboardInterrupt as stopped:
    sys.exit(128 + getattr(stopped, "signum", signal.SIGINT))
  print(json.dumps({"process_count": jax.process_count(), "device_count": jax.device_count(),
                    "step": final["step"], "test_accuracy": final["test_accuracy"],
                    "train_loss": final["train_loss"], "density": final["density"]}))


def _main(argv: list[str]) -> None:
  """``collective`` or ``WORKDIR STOP_AT``, then any ``--config.FIELD=VALUE`` for the config."""
  args, overrides = [], {}
  for arg in argv:
    if arg.startswith("--config."):
      field, value = arg[len("--config."):].split("=", 1)
      try:
        overrides[field] = ast.literal_eval(value)
      except (ValueError, SyntaxError):  # a plain string, e.g. host:port
        overrides[field] = value
    else:
      args.append(arg)
  if args == ["collective"]:
    _collective_worker(overrides)
  else:
    _worker(args[0], int(args[1]), overrides)


if __name__ == "__main__":
  _main(sys.argv[1:])
