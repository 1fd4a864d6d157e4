"""What every benchmark prints with its figures: the machine it measured on."""

from __future__ import annotations

import os
import platform


def machine() -> str:
  """CPU model, cores available, load average, and the JAX backend."""
  import jax
  model = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  dev = jax.devices()[0]
  return (f"{model}, {cores} cores (load average {load}); jax {jax.__version__} on "
          f"{dev.platform} ({dev.device_kind}) x{jax.device_count()}")
