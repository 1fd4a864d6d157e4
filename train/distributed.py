"""Starting JAX on N machines: ``jax.distributed.initialize`` from the config or environment.

Without a cluster manager, every process is told the coordinator's ``host:port`` (process 0's
machine), the process count and its own id, by config fields or environment variables::

  --config.coordinator_address=10.0.0.1:1234 --config.num_processes=2 --config.process_id=0
  JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0

Config fields win over the environment. Under a cluster manager JAX detects (SLURM, Open MPI,
TPU pods, Kubernetes), ``config.distributed=True`` alone is enough.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections

# Where and how a run executes: these may differ when a run is resumed.
LAUNCH_FIELDS = ("distributed", "coordinator_address", "num_processes", "process_id")
_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}
# Where JAX's cluster detection can supply the process count and id.
_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "OMPI_MCA_orte_hnp_uri",
                "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "KUBERNETES_SERVICE_HOST")
_initialized = False


def resolve(config: ml_collections.ConfigDict, environ: Mapping[str, str]) -> dict[str, Any] | None:
  """The keyword arguments for ``jax.distributed.initialize`` (``{}``: auto-detection), or
  ``None`` for a single-process run. Raises ``ValueError`` naming a missing or bad field."""
  values = {}
  for field, variable in _ENV.items():
    value = config.get(field)
    source = f"config.{field}"
    if value is None and environ.get(variable):
      value, source = environ[variable], f"${variable}"
    if value is None:
      continue
    if field != "coordinator_address":
      try:
        value = int(value)
      except ValueError:
        raise ValueError(f"{source} must be an integer; got {value!r}.") from None
    values[field] = (value, source)

  if "coordinator_address" not in values:
    if len(values) > 0:
      given = ", ".join(source for _, source in values.values())
      raise ValueError(f"{given} given without a coordinator: set config.coordinator_address "
                       "(or $JAX_COORDINATOR_ADDRESS) to process 0's host:port.")
    return {} if config.get("distributed") else None

  address, source = values["coordinator_address"]
  if not re.fullmatch(r"\[?[\w.\-:]+\]?:\d{1,5}", str(address)):
    raise ValueError(f"{source} must be host:port, e.g. 10.0.0.1:1234; got {address!r}.")
  kwargs = {"coordinator_address": address}
  if "num_processes" in values:
    count, count_source = values["num_processes"]
    if count < 1:
      raise ValueError(f"{count_source} must be >= 1; got {count}.")
    kwargs["num_processes"] = count
  if "process_id" in values:
    index, index_source = values["process_id"]
    if not 0 <= index < kwargs.get("num_processes", index + 1):
      raise ValueError(f"{index_source} must lie in [0, num_processes); got {index} of "
                       f"{kwargs.get('num_processes')}.")
    kwargs["process_id"] = index
  missing = [f for f in ("num_processes", "process_id") if f not in kwargs]
  if missing and not any(v in environ for v in _CLUSTER_ENV):
    needed = " and ".join(f"config.{f} (or ${_ENV[f]})" for f in missing)
    raise ValueError(f"A coordinator ({source}) needs {needed} when no cluster manager (SLURM, "
                     "Open MPI, Kubernetes, a TPU pod) can tell them.")
  return kwargs


def initialize(config: ml_collections.ConfigDict) -> None:
  """Calls ``jax.distributed.initialize`` once, before any other JAX call, if the config or
  the environment asks for more than one process."""
  global _initialized
  # Also when the caller started JAX's distributed runtime itself: a second start raises.
  if _initialized or getattr(jax.distributed, "is_initialized", lambda: False)():
    return
  kwargs = resolve(config, os.environ)
  if kwargs is not None:
    jax.distributed.initialize(**kwargs)
    _initialized = True
