"""Test-wide JAX settings: silent rank broadcasting is the classic bug of per-kernel code."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
# The tests compare exact transformations at float32 tolerances; GPUs default to TF32 dots and
# convs (errors ~1e-3), which would fail them there without any bug.
jax.config.update("jax_default_matmul_precision", "highest")

# Sets XLA_FLAGS at import; it runs only as a subprocess of test_multidevice.py.
collect_ignore = ["multidevice_check.py"]
