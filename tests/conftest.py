"""Test-wide JAX settings: silent rank broadcasting is the classic bug of per-kernel code."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
