"""The machine a figure was measured on (reports and benchmarks carry it with their numbers)."""

from __future__ import annotations

import os
import platform
from typing import Any

import jax


def describe() -> dict[str, Any]:
  """CPU model, cores available to this process, load average, JAX version and device."""
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  device = jax.devices()[0]
  return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
          "cores_available": cores, "load_average": list(os.getloadavg()),
          "jax": jax.__version__, "backend": device.platform, "device": device.device_kind,
          "device_count": jax.device_count()}


def summary() -> str:
  """:func:`describe` in one line."""
  m = describe()
  load = ", ".join(f"{x:.1f}" for x in m["load_average"])
  return (f"{m['cpu']}, {m['cores_available']} cores (load average {load}); jax {m['jax']} on "
          f"{m['backend']} ({m['device']}) x{m['device_count']}")
