"""XLA_FLAGS for the tests and the processes they start.

The suite compiles hundreds of small programs and runs none for long, so compiling dominates,
and -O0 compiles faster: on 2 cores beside two trainings, the whole suite took 2060 s against
2676 s at the default level. The flag goes into the environment, so subprocesses inherit it; a
level the caller set is kept.
"""

import os

FAST_COMPILE = "--xla_backend_optimization_level=0"
_DEVICES = "--xla_force_host_platform_device_count="


def flags(devices: int | None = None, fast: bool = False) -> str:
  """The environment's XLA_FLAGS with the fast-compile level unless it names a level; with
  ``devices``, that many CPU devices in place of any device count it names and, unless
  ``fast``, without the fast-compile level: the multi-device checks compare layouts at float32
  tolerances, which -O0's different rounding exceeded (xrda's N:M target under FSDP; the 4-device
  run's BatchNorm statistics against one device's).
  ``fast`` suits processes compared only with each other, at the same level."""
  kept = os.environ.get("XLA_FLAGS", "").split()
  if devices is not None:
    kept = [f for f in kept if not f.startswith(_DEVICES)] + [f"{_DEVICES}{devices}"]
    if not fast:
      return " ".join(f for f in kept if f != FAST_COMPILE)
  if not any(f.startswith("--xla_backend_optimization_level=") for f in kept):
    kept.append(FAST_COMPILE)
  return " ".join(kept)


def env(devices: int, **extra: str) -> dict[str, str]:
  """The environment for a process on ``devices`` CPU devices at the default level (``flags``),
  with ``extra`` variables."""
  return dict(os.environ, XLA_FLAGS=flags(devices), JAX_PLATFORMS="cpu", **extra)
