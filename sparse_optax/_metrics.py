"""Sparsity metrics as pure, jittable functions of a params tree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sparse_optax import _checks
from sparse_optax import _reweighting
from sparse_optax import _tree
from sparse_optax import _types


def count_nonzeros(params: Any) -> jax.Array:
  """Number of non-zero entries over all leaves (int32 scalar).

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> so.count_nonzeros({"a": jnp.array([0.0, 1.0]), "b": jnp.ones((2, 2))})
    Array(5, dtype=int32)
  """
  counts = [jnp.count_nonzero(x) for x in jax.tree.leaves(params)]
  return sum(counts, jnp.zeros([], jnp.int32))


def density(params: Any) -> jax.Array:
  """Non-zeros over all parameters (float32 in [0, 1])."""
  return count_nonzeros(params).astype(jnp.float32) / _tree.tree_size(params)


def compression_ratio(params: Any) -> jax.Array:
  """All parameters over non-zeros (``inf`` when every entry is zero)."""
  nz = count_nonzeros(params).astype(jnp.float32)
  return jnp.where(nz > 0, _tree.tree_size(params) / jnp.maximum(nz, 1), jnp.inf)


@_checks.names_errors
def sparsity_summary(params: Any, *, kernel_layout: str = "HWIO",
                     convs: _types.Mask | None = None) -> dict[str, Any]:
  """Total and per-leaf sparsity, and structured sparsity of conv kernels.

  Counts every leaf (biases and BatchNorm included), as the papers report.

  Args:
    params: any pytree of arrays.
    kernel_layout: how conv kernels are stored, ``"HWIO"`` (Flax, Haiku) or
      ``"OIHW"`` (PyTorch, Equinox).
    convs: the leaves that are conv kernels, a tree of bools or a callable
      ``params -> tree``; default the 4-D leaves (2-D convolutions).

  Returns:
    A dict with ``total`` (int), ``nonzeros``, ``density``, ``compression``;
    over the conv kernels ``kernels``/``zero_kernels`` (all-zero H×W kernels) and
    ``channels``/``zero_channels`` (all-zero output filters); and ``layers``
    mapping each leaf's path (``"conv1/kernel"``) to its ``total``,
    ``nonzeros``, ``density``.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> k = jnp.zeros((3, 3, 2, 4)).at[:, :, 0, 1].set(1.0)
    >>> s = so.sparsity_summary({"conv": {"kernel": k}, "bias": jnp.ones(4)})
    >>> int(s["nonzeros"]), int(s["zero_kernels"]), int(s["zero_channels"])
    (13, 7, 3)
    >>> s["layers"]["conv/kernel"]["density"]
    Array(0.125, dtype=float32)
  """
  layers = {}
  kernels = zero_kernels = channels = zero_channels = 0
  is_conv = (jax.tree.leaves(_checks.resolve_mask(convs, params))
             if convs is not None else [jnp.ndim(x) == 4 for x in jax.tree.leaves(params)])
  for (path, x), conv in zip(jax.tree_util.tree_leaves_with_path(params), is_conv):
    nz = jnp.count_nonzero(x)
    layers[_tree.path_name(path)] = {
        "total": x.size,
        "nonzeros": nz,
        "density": nz.astype(jnp.float32) / max(x.size, 1),
    }
    if conv:
      spatial, inputs, _ = _reweighting.conv_axes(
          x.shape, kernel_layout, f"{_checks.caller()}: leaf {_tree.leaf_name(path)}")
      alive_k = jnp.any(x != 0, axis=spatial)
      alive_c = jnp.any(x != 0, axis=(*spatial, inputs))
      kernels += alive_k.size
      zero_kernels = zero_kernels + alive_k.size - jnp.count_nonzero(alive_k)
      channels += alive_c.size
      zero_channels = zero_channels + alive_c.size - jnp.count_nonzero(alive_c)
  return {
      "total": _tree.tree_size(params),
      "nonzeros": count_nonzeros(params),
      "density": density(params),
      "compression": compression_ratio(params),
      "kernels": kernels,
      "zero_kernels": jnp.asarray(zero_kernels, jnp.int32),
      "channels": channels,
      "zero_channels": jnp.asarray(zero_channels, jnp.int32),
      "layers": layers,
  }
