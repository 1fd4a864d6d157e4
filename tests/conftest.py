"""Test-wide JAX settings: silent rank broadcasting is the classic bug of per-kernel code."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

# Sets XLA_FLAGS at import; it runs only as a subprocess of test_multidevice.py.
collect_ignore = ["multidevice_check.py"]
