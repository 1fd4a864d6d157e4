"""Compact in-memory form of a sparse params tree: each leaf a BCOO where that is smaller."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from sparse_optax import _checks
from sparse_optax import _tree


# Signed, narrowest first. Signed because BCOO's own ops (concatenate, padding
# to a larger nse) write indices up to the dimension size and raise on signed
# overflow, where an unsigned dtype wraps silently.
_INDEX_DTYPES = (np.int8, np.int16, np.int32, np.int64)


def _where(path) -> str:
  name = _tree.path_name(path)
  return f"leaf {name!r}" if name else "the root leaf"


def _is_array(x: Any) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _index_dtype(shape: tuple[int, ...]) -> np.dtype | None:
  """The narrowest signed int that holds every dimension size, or None.

  It must hold the size itself, not only the largest index: BCOO marks padding
  entries with index = size, and refuses a dtype that cannot hold it.
  """
  for dtype in _INDEX_DTYPES:
    dtype = np.dtype(dtype)
    # int64 exists only with jax_enable_x64; without it jax would narrow it.
    if max(shape) <= np.iinfo(dtype).max and jax.dtypes.canonicalize_dtype(dtype) == dtype:
      return dtype
  return None


def _compact_leaf(path, x: Any) -> Any:
  if isinstance(x, sparse.JAXSparse):
    raise TypeError(f"{_checks.caller()}: {_where(path)} is already sparse ({type(x).__name__}).")
  if not _is_array(x):
    raise TypeError(
        f"{_checks.caller()}: {_where(path)} is a {type(x).__name__}, not an array; "
        "every leaf must be a jax.Array or numpy array."
    )
  if isinstance(x, jax.core.Tracer):
    raise TypeError(
        f"{_checks.caller()}: {_where(path)} is traced; to_compact needs concrete arrays "
        "(the number of non-zeros sets the shapes), so call it outside jax.jit."
    )
  # Integer/bool leaves (step counters, masks) and dtypes jax would narrow
  # (float64 without x64) stay as they are: a BCOO could not hold them exactly.
  if (
      x.ndim == 0
      or not jnp.issubdtype(x.dtype, jnp.floating)
      or jax.dtypes.canonicalize_dtype(x.dtype) != x.dtype
  ):
    return x
  index_dtype = _index_dtype(x.shape)
  if index_dtype is None:
    return x
  dense = np.asarray(x)
  # -0.0 == 0: a negative zero is a zero here, as in count_nonzeros.
  indices = np.argwhere(dense != 0).astype(index_dtype)
  data = dense[tuple(indices.T)]
  if data.nbytes + indices.nbytes >= dense.nbytes:
    return x
  return sparse.BCOO(
      (jnp.asarray(data), jnp.asarray(indices)),
      shape=x.shape,
      indices_sorted=True,
      unique_indices=True,
  )


@_checks.names_errors
def to_compact(params: Any) -> Any:
  """Each floating leaf as a ``BCOO`` where that takes fewer bytes than the dense array.

  A BCOO leaf is fully sparse (``n_batch = n_dense = 0``) and costs
  ``data.nbytes + indices.nbytes``; its indices have the narrowest signed int
  dtype that holds the leaf's largest dimension size (``int8`` up to 127,
  ``int16`` up to 32767, then ``int32``). Use it for ``bcoo @ x``,
  ``x @ bcoo``, ``.T`` and ``.todense()``; widen the indices to ``int32``
  before reshaping or concatenating it. Non-floating leaves, 0-d leaves and
  leaves where a BCOO is not strictly smaller are kept as they are (the same
  object). Needs concrete arrays: not jittable.

  Zeros are ``x == 0``, so ``-0.0`` is a zero, as in :func:`count_nonzeros`,
  and comes back from :func:`from_compact` as ``+0.0``: pruning by
  ``w * mask`` writes ``-0.0`` for each negative weight pruned, and storing
  those would keep half the pruned weights. Everything else, NaN payloads
  included, comes back bit for bit.

  Args:
    params: a pytree whose leaves are jax or numpy arrays.

  Returns:
    The same tree with some leaves replaced by ``jax.experimental.sparse.BCOO``.

  Raises:
    TypeError: naming the leaf's path, for a leaf that is not an array, is
      already sparse, or is traced.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> k = jnp.zeros((300, 100)).at[::50, ::10].set(1.0)
    >>> c = so.to_compact({"kernel": k, "bias": jnp.ones(100)})
    >>> c["kernel"].nse, c["kernel"].indices.dtype, type(c["bias"]).__name__
    (60, dtype('int16'), 'ArrayImpl')
    >>> bool((so.from_compact(c)["kernel"] == k).all())
    True
  """
  is_sparse = lambda x: isinstance(x, sparse.JAXSparse)
  return jax.tree_util.tree_map_with_path(_compact_leaf, params, is_leaf=is_sparse)


def _dense_leaf(path, x: Any) -> Any:
  if isinstance(x, sparse.BCOO) and x.unique_indices and x.n_batch == 0 and x.n_dense == 0:
    # A scatter-set keeps every stored bit; todense() adds into zeros, which
    # quiets signalling NaNs. unique_indices makes set and add agree otherwise.
    idx = tuple(x.indices[:, i] for i in range(x.ndim))
    out = jnp.zeros(x.shape, x.dtype)
    return out.at[idx].set(x.data, unique_indices=True, indices_are_sorted=x.indices_sorted,
                           mode="drop")
  if isinstance(x, sparse.JAXSparse):
    return x.todense()
  if not _is_array(x):
    raise TypeError(
        f"{_checks.caller()}: {_where(path)} is a {type(x).__name__}, not an array or BCOO."
    )
  return x


@_checks.names_errors
def from_compact(compact: Any) -> Any:
  """The dense tree back from :func:`to_compact`: original shapes and dtypes.

  Jittable. Dense leaves are returned as they are. Exact, except that ``-0.0``
  in a leaf that was stored as a BCOO comes back as ``+0.0``.

  Args:
    compact: a tree from :func:`to_compact` (any ``JAXSparse`` leaf is densified).

  Returns:
    The tree with every sparse leaf a dense ``jax.Array``.

  Raises:
    TypeError: naming the leaf's path, for a leaf that is neither an array nor sparse.

  Example:
    >>> import jax, jax.numpy as jnp, sparse_optax as so
    >>> c = so.to_compact({"w": jnp.array([[0.0, 2.0], [0.0, 0.0]])})
    >>> jax.jit(so.from_compact)(c)
    {'w': Array([[0., 2.], [0., 0.]], dtype=float32)}
  """
  is_sparse = lambda x: isinstance(x, sparse.JAXSparse)
  return jax.tree_util.tree_map_with_path(_dense_leaf, compact, is_leaf=is_sparse)


def compact_matmul(x: jax.Array, kernel: Any) -> jax.Array:
  """``x @ kernel`` over ``x``'s last axis, for a dense or BCOO ``(in, out)`` kernel.

  The product of a Dense layer (kernel ``(in, out)``, as in Flax) from its
  compact form. Jittable, differentiable in ``x``; with a BCOO kernel the sums
  run in a different order than the dense product.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> k = so.to_compact(jnp.zeros((4, 3)).at[1, 2].set(2.0))
    >>> so.compact_matmul(jnp.ones((2, 4)), k)
    Array([[0., 0., 2.], [0., 0., 2.]], dtype=float32)
  """
  if not isinstance(kernel, sparse.BCOO):
    return x @ kernel
  # (out, ...) from the sparse side, then out moved last.
  dims = (((0,), (x.ndim - 1,)), ((), ()))
  y = sparse.bcoo_dot_general(kernel, x, dimension_numbers=dims)
  return jnp.moveaxis(y, 0, -1)


@_checks.names_errors
def compact_summary(params: Any) -> dict[str, Any]:
  """Bytes of each leaf dense and as :func:`to_compact` stores it (Python numbers).

  Args:
    params: a pytree of arrays, as for :func:`to_compact`.

  Returns:
    A dict with ``dense_bytes``, ``compact_bytes``, ``ratio`` (dense over
    compact; ``inf`` when only all-zero leaves remain, 1.0 for an empty tree)
    and ``layers`` mapping each leaf's path (``"dense/kernel"``) to its
    ``format`` (``"bcoo"`` or ``"dense"``), ``dense_bytes``, ``compact_bytes``,
    ``nonzeros`` and ``index_dtype`` (``None`` for dense).

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> k = jnp.zeros((300, 100)).at[::50, ::10].set(1.0)
    >>> s = so.compact_summary({"kernel": k, "bias": jnp.ones(100)})
    >>> s["layers"]["kernel"]
    {'format': 'bcoo', 'dense_bytes': 120000, 'compact_bytes': 480,
     'nonzeros': 60, 'index_dtype': 'int16'}
    >>> s["dense_bytes"], s["compact_bytes"], round(s["ratio"], 1)
    (120400, 880, 136.8)
  """
  is_sparse = lambda x: isinstance(x, sparse.JAXSparse)
  layers = {}
  for path, x in jax.tree_util.tree_leaves_with_path(params, is_leaf=is_sparse):
    c = _compact_leaf(path, x)
    dense_bytes = int(np.dtype(x.dtype).itemsize * np.prod(x.shape, dtype=np.int64))
    if isinstance(c, sparse.BCOO):
      layers[_tree.path_name(path)] = {
          "format": "bcoo",
          "dense_bytes": dense_bytes,
          "compact_bytes": int(c.data.nbytes + c.indices.nbytes),
          "nonzeros": int(c.nse),
          "index_dtype": str(c.indices.dtype),
      }
    else:
      layers[_tree.path_name(path)] = {
          "format": "dense",
          "dense_bytes": dense_bytes,
          "compact_bytes": dense_bytes,
          "nonzeros": int(np.count_nonzero(np.asarray(x))),
          "index_dtype": None,
      }
  dense_total = sum(v["dense_bytes"] for v in layers.values())
  compact_total = sum(v["compact_bytes"] for v in layers.values())
  if compact_total:
    ratio = dense_total / compact_total
  else:
    ratio = float("inf") if dense_total else 1.0
  return {
      "dense_bytes": dense_total,
      "compact_bytes": compact_total,
      "ratio": ratio,
      "layers": layers,
  }
