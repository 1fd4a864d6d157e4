"""N:M sparsity: at most N non-zeros in every group of M consecutive weights along a kernel's
input dimension (2:4 is what NVIDIA's sparse tensor cores multiply, Mishra et al. 2021).

The groups of a leaf are read without a transpose: its input axes (one axis, or several
consecutive ones flattened in C order, e.g. an attention output kernel's (heads, head_dim))
are reshaped in place into (K/M, M), and the top N of each group are ranked by M comparisons
along the new axis of size M: no sort, and every other axis untouched, so a sharded leaf stays
sharded.

Which axes are the input, per leaf (``axes`` arguments): an int or a tuple of consecutive ints;
``None`` (no pattern on that leaf); or a kernel layout, ``"HWIO"`` (Flax, Haiku) or ``"OIHW"``
(PyTorch), which reads a 2-D leaf as a dense kernel (in, out) (axis 0) and a 4-D leaf as a 2-D
convolution (its I axis). Other ranks are ambiguous under a layout (a 3-D leaf is a 1-D
convolution (W, I, O), an attention kernel (in, heads, head_dim) or its output kernel
(heads, head_dim, out)) and must be named. A tree (the params' structure or a prefix) or a
callable ``params -> tree`` chooses per leaf, as ``structure`` does for the log-l1 weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparse_optax import _checks
from sparse_optax import _reweighting
from sparse_optax import _tree

Pattern = tuple[int, int]
LAYOUTS = _reweighting.KERNEL_LAYOUTS


def parse_pattern(pattern: Any, name: str = "pattern") -> Pattern:
  """``(N, M)`` from ``(N, M)`` or ``"N:M"``, with ``1 <= N <= M``."""
  value = pattern
  if isinstance(pattern, str):
    parts = pattern.split(":")
    try:
      value = tuple(int(p) for p in parts)
    except ValueError:
      value = None
  if (not isinstance(value, (tuple, list)) or len(value) != 2
      or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
    raise ValueError(f"{_checks.caller()}: {name} must be (N, M) or 'N:M' with ints, e.g. "
                     f"(2, 4); got {pattern!r}.")
  n, m = int(value[0]), int(value[1])
  if not 1 <= n <= m:
    raise ValueError(f"{_checks.caller()}: {name} N:M needs 1 <= N <= M (at most N non-zeros "
                     f"in each group of M); got {n}:{m}.")
  return n, m


def _is_spec(x: Any) -> bool:
  """A per-leaf axes value: None, an int, a tuple of ints or a layout name."""
  return (x is None or isinstance(x, (int, np.integer, str))
          or (isinstance(x, tuple) and all(isinstance(a, (int, np.integer)) for a in x)))


def _where(path) -> str:
  return f"leaf {_tree.leaf_name(path)!r}"


def input_axes(shape: tuple[int, ...], spec: Any, where: str) -> tuple[int, ...] | None:
  """The consecutive input axes of a leaf of ``shape`` under one per-leaf ``spec``."""
  ndim = len(shape)
  if spec is None:
    return None
  if isinstance(spec, (jax.Array, jax.core.Tracer)):
    raise TypeError(f"{_checks.caller()}: pattern axes are an array ({spec!r}); under "
                    "optax.inject_hyperparams, name pattern_axes in static_args.")
  if ndim < 2:
    raise ValueError(f"{_checks.caller()}: {where} has shape {tuple(shape)}; an N:M pattern "
                     "applies to matrices and kernels (ndim >= 2), not to vectors or scalars. "
                     "Leave it out with mask= or pattern axes None.")
  if isinstance(spec, str):
    if spec not in LAYOUTS:
      raise ValueError(f"{_checks.caller()}: {where}: pattern axes must be an int, a tuple of "
                       f"ints, None or a layout in {LAYOUTS}; got {spec!r}.")
    if ndim == 2:
      axes = (0,)  # a dense kernel (in, out)
    elif ndim == 4:
      axes = (_reweighting.conv_axes(shape, spec, where)[1],)
    else:
      raise ValueError(
          f"{_checks.caller()}: {where} has shape {tuple(shape)}: under the {spec} layout only "
          "2-D (dense (in, out)) and 4-D (2-D conv) leaves have a known input axis. Name its "
          "input axes in pattern_axes: e.g. 0 for an attention kernel (in, heads, head_dim), "
          "(0, 1) for its output kernel (heads, head_dim, out), 1 for a 1-D conv (W, I, O), "
          "or None to leave it out of the pattern.")
  else:
    axes = (spec,) if isinstance(spec, (int, np.integer)) else tuple(spec)
    if not axes or any(not -ndim <= a < ndim for a in axes):
      raise ValueError(f"{_checks.caller()}: {where} has shape {tuple(shape)}; pattern axes "
                       f"{spec!r} are not axes of it.")
    axes = tuple(int(a) % ndim for a in axes)
    if axes != tuple(range(axes[0], axes[0] + len(axes))):
      raise ValueError(f"{_checks.caller()}: {where}: pattern axes {spec!r} must be "
                       "consecutive and increasing (they are flattened into one input axis).")
  return axes


def check_divisible(shape: tuple[int, ...], axes: tuple[int, ...], m: int, where: str) -> None:
  size = math.prod(shape[a] for a in axes)
  if size % m:
    raise ValueError(
        f"{_checks.caller()}: {where} has shape {tuple(shape)}; its input dimension (axes "
        f"{axes}, size {size}) is not a multiple of M={m}, so it cannot be cut into groups of "
        f"{m}. Leave it out of the pattern (pattern axes None, or mask=).")


def leaf_axes(spec: Any, params: Any, selected: Any, m: int) -> list[tuple[int, ...] | None]:
  """Per flattened leaf: its input axes, None where it has no pattern (outside ``selected``,
  or given None). Checks each patterned leaf's input size divides by ``m``."""
  paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  leaves = jax.tree.leaves(params)
  if not leaves:  # empty, or optax.tree.map_params's placeholder
    return []
  if spec is None:
    spec = "HWIO"
  tree = spec(params) if callable(spec) else spec
  if _is_spec(tree):
    per_leaf = [tree] * len(leaves)
  else:
    try:
      per_leaf = jax.tree.leaves(
          jax.tree.map(lambda value, sub: jax.tree.map(lambda _: value, sub), tree, params,
                       is_leaf=_is_spec),
          is_leaf=lambda x: x is None or _is_spec(x))
    except (ValueError, TypeError) as e:
      raise ValueError(
          f"{_checks.caller()}: pattern_axes does not match the params tree (it must have the "
          f"params' structure, or a prefix of it):\n  pattern_axes: {tree!r}\n"
          f"  params: {jax.tree.structure(params)}") from e
  out = []
  for path, x, s, sel in zip(paths, leaves, per_leaf, jax.tree.leaves(selected)):
    if not sel:
      out.append(None)
      continue
    axes = input_axes(np.shape(x), s, _where(path))
    if axes is not None:
      check_divisible(np.shape(x), axes, m, _where(path))
    out.append(axes)
  return out


def _grouped_shape(shape: tuple[int, ...], axes: tuple[int, ...], m: int) -> tuple[int, ...]:
  """``shape`` with its input axes as (K/M, M); the group axis is ``axes[0] + 1``."""
  k = math.prod(shape[a] for a in axes)
  return shape[:axes[0]] + (k // m, m) + shape[axes[-1] + 1:]


def top_n(scores: jax.Array, n: int, axis: int) -> jax.Array:
  """True at the ``n`` largest ``scores`` along ``axis`` (small), ties to the lower index.

  Each element's rank is the count of those before it that are >= it plus those after it that
  are > it: ``size(axis)`` comparisons of the whole array, no sort.
  """
  m = scores.shape[axis]
  position = jax.lax.broadcasted_iota(jnp.int32, scores.shape, axis)
  rank = jnp.zeros(scores.shape, jnp.int32)
  for j in range(m):
    other = jax.lax.slice_in_dim(scores, j, j + 1, axis=axis)
    beats = jnp.where(position > j, other >= scores, other > scores)
    rank = rank + beats.astype(jnp.int32)
  return rank < n


def _soft_scores(z: jax.Array, t: Any) -> jax.Array:
  t = jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape)
  return jnp.maximum(jnp.abs(z) - t, 0)


def prox(z: jax.Array, t: Any, pattern: Pattern, axes: tuple[int, ...]) -> jax.Array:
  """The prox of :math:`\\sum_i t_i|\\theta_i|` under at most N non-zeros per group: in each
  group, the soft-thresholded values of the N largest :math:`(|z| - t)_+`, zero elsewhere."""
  n, m = pattern
  scores = _soft_scores(z, t)
  shape = _grouped_shape(z.shape, axes, m)
  keep = top_n(scores.reshape(shape), n, axes[0] + 1).reshape(z.shape)
  return jnp.where(keep, jnp.sign(z) * scores, 0).astype(z.dtype)


def mask_of(x: jax.Array, pattern: Pattern, axes: tuple[int, ...]) -> jax.Array:
  """True at the N largest |x| of each group (exactly N per group)."""
  n, m = pattern
  shape = _grouped_shape(x.shape, axes, m)
  return top_n(jnp.abs(x).reshape(shape), n, axes[0] + 1).reshape(x.shape)


def _one_leaf(x: Any, axes: Any, kernel_layout: str, m: int) -> tuple[int, ...]:
  spec = kernel_layout if axes is None else axes
  found = input_axes(np.shape(x), spec, "the array")
  check_divisible(np.shape(x), found, m, "the array")
  return found


@_checks.names_errors
def nm_mask(x: Any, pattern: Any, *, axes: Any = None, kernel_layout: str = "HWIO"
            ) -> jax.Array:
  """The N:M magnitude mask of one array: True at the N largest :math:`|x|` of each group.

  Groups are M consecutive entries along the input dimension: axis 0 of a dense kernel
  (in, out), the I axis of a 2-D conv kernel (``kernel_layout``), or ``axes`` (an int or a
  tuple of consecutive axes, flattened). Exactly N entries per group are True, ties going to
  the lower index, so a group with fewer than N non-zeros has zeros marked too. Jittable.

  Args:
    x: a matrix or kernel.
    pattern: ``(N, M)`` or ``"N:M"``.
    axes: the input axes; default: by ``kernel_layout`` for 2-D and 4-D arrays.
    kernel_layout: ``"HWIO"`` (Flax, Haiku) or ``"OIHW"`` (PyTorch).

  Returns:
    A bool array of ``x``'s shape.

  Raises:
    ValueError: a bad pattern, or an input dimension that is not a multiple of M.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> w = jnp.array([[1.0], [-3.0], [0.5], [2.0]])  # (in=4, out=1)
    >>> so.nm_mask(w, "2:4").ravel()
    Array([False,  True, False,  True], dtype=bool)
  """
  n_m = parse_pattern(pattern)
  x = jnp.asarray(x)
  return mask_of(x, n_m, _one_leaf(x, axes, kernel_layout, n_m[1]))


@_checks.names_errors
def nm_violations(params: Any, pattern: Any, *, axes: Any = None,
                  mask: Any = None) -> dict[str, int]:
  """The leaves of ``params`` that break an N:M pattern, with how many of their groups do.

  Checks every leaf that ``mask`` selects (default: ``ndim >= 2``) and whose ``axes`` are not
  None. An empty dict means the tree satisfies the pattern. Needs concrete arrays.

  Args:
    params: a pytree of arrays.
    pattern: ``(N, M)`` or ``"N:M"``.
    axes: each leaf's input axes, as ``pattern_axes`` of :func:`soft_threshold`: a layout
      (``"HWIO"``, the default, or ``"OIHW"``), an int, a tuple, None, or a tree or callable
      of those.
    mask: the leaves checked, a tree of bools or a callable (default ``ndim >= 2``).

  Returns:
    ``{leaf path: groups with more than N non-zeros}`` for the leaves that break it.

  Raises:
    ValueError: a bad pattern, a leaf whose input size is not a multiple of M, or a leaf
      whose input axes are ambiguous (see :func:`soft_threshold`).

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> params = {"w": jnp.array([[1.0], [0.0], [2.0], [0.0]]), "v": jnp.ones((4, 2))}
    >>> so.nm_violations(params, "2:4")
    {'v': 2}
  """
  n, m = parse_pattern(pattern)
  selected = _checks.resolve_mask(mask, params)
  per_leaf = leaf_axes(axes, params, selected, m)
  out = {}
  for (path, x), a in zip(jax.tree_util.tree_leaves_with_path(params), per_leaf):
    if a is None:
      continue
    x = np.asarray(x)
    counts = (x != 0).reshape(_grouped_shape(x.shape, a, m)).sum(axis=a[0] + 1)
    bad = int(np.count_nonzero(counts > n))
    if bad:
      out[_tree.path_name(path) or "(root)"] = bad
  return out


def index_dtype(m: int) -> np.dtype:
  """The narrowest int that holds a position within a group of ``m``."""
  return np.dtype(np.uint8 if m <= 256 else np.int32)


@_checks.names_errors
def nm_compress(x: Any, pattern: Any, *, axes: Any = None, kernel_layout: str = "HWIO"
                ) -> tuple[jax.Array, jax.Array]:
  """An N:M array as its values and their positions within each group.

  The input axes become (K/M, N): ``values`` holds, per group, the N entries of
  :func:`nm_mask` in increasing position, and ``indices`` (``uint8`` for M <= 256) their
  positions 0..M-1 within the group. ``values.nbytes + indices.nbytes`` is ``N/M`` of the
  dense bytes plus one byte per kept entry. :func:`nm_decompress` gives ``x`` back exactly
  when ``x`` satisfies the pattern. Jittable.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> w = jnp.array([[0.0], [-3.0], [0.0], [2.0]])
    >>> values, indices = so.nm_compress(w, "2:4")
    >>> values.ravel(), indices.ravel()
    (Array([-3.,  2.], dtype=float32), Array([1, 3], dtype=uint8))
    >>> bool((so.nm_decompress(values, indices, "2:4", w.shape) == w).all())
    True
  """
  (n, m) = parse_pattern(pattern)
  x = jnp.asarray(x)
  a = _one_leaf(x, axes, kernel_layout, m)
  g = a[0] + 1
  grouped = x.reshape(_grouped_shape(x.shape, a, m))
  keep = mask_of(x, (n, m), a).reshape(grouped.shape)
  # Positions of the kept entries first, in increasing order (a stable sort of ~keep).
  order = jnp.argsort(~keep, axis=g, stable=True)
  positions = jax.lax.slice_in_dim(order, 0, n, axis=g)
  values = jnp.take_along_axis(grouped, positions, axis=g)
  return values, positions.astype(index_dtype(m))


@_checks.names_errors
def nm_decompress(values: Any, indices: Any, pattern: Any, shape: tuple[int, ...], *,
                  axes: Any = None, kernel_layout: str = "HWIO") -> jax.Array:
  """The dense array of shape ``shape`` back from :func:`nm_compress`'s values and indices
  (same ``pattern``, ``axes`` and ``kernel_layout``). Jittable; exact: each dense entry is
  one stored value or zero."""
  n, m = parse_pattern(pattern)
  shape = tuple(shape)
  a = _one_leaf(jax.ShapeDtypeStruct(shape, jnp.float32), axes, kernel_layout, m)
  g = a[0] + 1
  grouped = _grouped_shape(shape, a, m)
  values, indices = jnp.asarray(values), jnp.asarray(indices).astype(jnp.int32)
  expected = grouped[:g] + (n,) + grouped[g + 1:]
  if values.shape != expected or indices.shape != expected:
    raise ValueError(f"{_checks.caller()}: values {values.shape} and indices {indices.shape} "
                     f"do not hold a {n}:{m} array of shape {shape} (expected {expected}).")
  dense = jnp.zeros(grouped, values.dtype)
  for k in range(n):  # positions are distinct within a group: each sets its own entry
    v = jax.lax.slice_in_dim(values, k, k + 1, axis=g)
    i = jax.lax.slice_in_dim(indices, k, k + 1, axis=g)
    slot = jax.lax.broadcasted_iota(jnp.int32, grouped, g)
    dense = jnp.where(slot == i, v, dense)
  return dense.reshape(shape)


def check_spec(pattern: Any, pattern_axes: Any) -> Pattern | None:
  """The parsed pattern (None without one); refuses axes given without a pattern."""
  if pattern is None:
    if pattern_axes is not None:
      raise ValueError(f"{_checks.caller()}: pattern_axes says where an N:M pattern's groups "
                       "lie; without pattern= there is none.")
    return None
  if isinstance(pattern_axes, (jax.Array, jax.core.Tracer)):
    raise TypeError(f"{_checks.caller()}: pattern_axes is an array ({pattern_axes!r}); under "
                    "optax.inject_hyperparams, name it in static_args=('pattern_axes',).")
  return parse_pattern(pattern)


AxesSpec = Any  # see the module docstring
AxesFn = Callable[[Any], Any]
