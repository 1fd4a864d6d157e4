"""sparse_optax."""
