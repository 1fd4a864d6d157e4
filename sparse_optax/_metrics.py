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


@_checks.names_errors
def group_sparsity(params: Any, structure: Any, *,
                   mask: _types.Mask | None = None) -> dict[str, Any]:
  """How many groups tied across leaves (:func:`tied`) are entirely zero.

  The prox is elementwise, so a group dies only when all its weights do; this counts those
  groups: attention heads and MLP neurons under :func:`head_groups` and
  :func:`neuron_groups`. A group holds its slices in the leaves tied to its set that ``mask``
  selects, as :func:`log_l1_weights` reads them (so a bias left out of the penalty, e.g. a
  1-D MLP bias under the default mask, does not keep a neuron alive).

  Args:
    params: any pytree of arrays.
    structure: the tree or callable ``params -> tree`` given to :func:`log_l1_weights` /
      :func:`xrda` as ``structure=``; leaves other than :func:`tied` ones are ignored.
    mask: the penalised leaves, as in :func:`xrda` (default ``ndim >= 2``).

  Returns:
    A dict with ``groups`` (int, over all group sets), ``zero_groups`` (int32, the groups
    whose every weight is exactly zero) and ``sets`` mapping each group set's name to its
    own ``groups`` and ``zero_groups``.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> fc1 = {"kernel": jnp.ones((3, 4)).at[:, 1].set(0.0), "bias": jnp.ones(4)}
    >>> fc2 = {"kernel": jnp.ones((4, 3)).at[1:3].set(0.0), "bias": jnp.ones(3)}
    >>> s1, s2 = so.neuron_groups(fc1, fc2, "mlp")
    >>> out = so.group_sparsity({"fc1": fc1, "fc2": fc2}, {"fc1": s1, "fc2": s2})
    >>> out["groups"], int(out["zero_groups"])  # neuron 1: column 1 and row 1 zero
    (4, 1)
  """
  leaves = jax.tree.leaves(params)
  structures = _reweighting.leaf_structures(structure, params, mask)
  sets = {}
  for gs in _reweighting.group_sets(structures, params):
    alive = jnp.zeros((gs.size,), bool)
    for i, axis in gs.members:
      others = tuple(k for k in range(jnp.ndim(leaves[i])) if k != axis)
      alive = alive | jnp.any(leaves[i] != 0, axis=others)
    sets[gs.name] = {"groups": gs.size,
                     "zero_groups": (gs.size - jnp.count_nonzero(alive)).astype(jnp.int32)}
  return {
      "groups": sum(s["groups"] for s in sets.values()),
      "zero_groups": sum((s["zero_groups"] for s in sets.values()), jnp.zeros([], jnp.int32)),
      "sets": sets,
  }
