"""Test-wide JAX settings: silent rank broadcasting is the classic bug of per-kernel code."""

import os

from tests import xla_flags

# Before JAX starts its backend, and inherited by the processes the tests start.
os.environ["XLA_FLAGS"] = xla_flags.flags()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# The tests compare exact transformations at float32 tolerances; GPUs default to TF32 dots and
# convs (errors ~1e-3), which would fail them there without any bug.
jax.config.update("jax_default_matmul_precision", "highest")

# Scripts the tests run as subprocesses (multidevice_check.py sets XLA_FLAGS at import).
collect_ignore = ["multidevice_check.py", "sweep_trainer.py", "sweep_worker.py"]
