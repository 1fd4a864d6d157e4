"""l1 weights: uniform, and the adaptive log-l1 reweighting (unstructured, kernel, channel, and
groups tied across leaves: attention heads, MLP neurons)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparse_optax import _checks
from sparse_optax import _tree
from sparse_optax import _types

STRUCTURES = ("unstructured", "kernel", "channel")
KERNEL_LAYOUTS = ("HWIO", "OIHW")


def conv_axes(shape: tuple[int, ...], kernel_layout: str, where: str = "a leaf"
              ) -> tuple[tuple[int, ...], int, int]:
  """(spatial axes, input-channel axis, output-channel axis) of a conv kernel.

  ``"HWIO"`` (Flax, Haiku, TensorFlow): spatial axes first, then in, out.
  ``"OIHW"`` (PyTorch, Equinox): out, in, then the spatial axes. Any number of
  spatial axes (1-D, 2-D, 3-D convolutions).
  """
  if kernel_layout not in KERNEL_LAYOUTS:
    raise ValueError(f"kernel_layout must be one of {KERNEL_LAYOUTS}; got {kernel_layout!r}.")
  ndim = len(shape)
  if ndim < 3:
    raise ValueError(
        f"{where} has shape {tuple(shape)}, which is not a conv kernel in {kernel_layout} "
        "layout (that needs at least one spatial axis besides in and out: ndim >= 3). Give "
        "it the 'unstructured' structure.")
  if kernel_layout == "HWIO":
    return tuple(range(ndim - 2)), ndim - 2, ndim - 1
  return tuple(range(2, ndim)), 1, 0


@dataclasses.dataclass(frozen=True)
class Tied:
  """A leaf's share of a set of groups tied across leaves (see :func:`tied`)."""

  group: str
  axis: int


def tied(group: str, axis: int) -> Tied:
  """A structure-tree leaf: slice ``i`` along ``axis`` of this leaf belongs to group ``i`` of
  the group set named ``group``.

  Every leaf tied to the same name adds its slices to the same groups, so a group spans
  several leaves (an attention head's slices of the q, k, v and output kernels; an MLP
  neuron's column of the first kernel and row of the second), and every such leaf must have
  the same size along its tied axis. :func:`log_l1_weights` averages the magnitude over each
  group's slices in all its leaves and gives the whole group one weight;
  :func:`group_sparsity` counts the groups that are entirely zero.
  :func:`head_groups` and :func:`neuron_groups` write these for Flax NNX layouts. Under
  ``optax.inject_hyperparams``, name a callable structure in ``static_args`` (as a callable
  mask), or it is taken for a schedule.

  Example:
    >>> import sparse_optax as so
    >>> so.tied("mlp0/neurons", axis=1)
    Tied(group='mlp0/neurons', axis=1)
  """
  if not isinstance(group, str) or not group:
    raise TypeError(f"tied: group must be a non-empty str naming the group set; got {group!r}.")
  if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
    raise TypeError(f"tied: axis must be an int; got {axis!r}.")
  return Tied(group, int(axis))


def _relative_names(path) -> list[str]:
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
    path = path[:-1]  # an nnx.State leaf: the Variable's value, not a module or param name
  return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def _map_named(fn, tree: Any) -> Any:
  """``fn(names, leaf)`` over ``tree``'s leaves, keeping its containers (dicts, nnx.State)."""
  return jax.tree_util.tree_map_with_path(lambda path, x: fn(_relative_names(path), x), tree)


def head_groups(attention: Any, group: str, *, projections: tuple[str, ...] = (
    "query", "key", "value"), out: str = "out") -> Any:
  """The structure subtree of one attention layer's params: each head one group.

  For the layout of Flax NNX ``MultiHeadAttention``: q, k, v kernels ``(in, heads, head_dim)``
  and biases ``(heads, head_dim)``, output kernel ``(heads, head_dim, out)``. Head ``h`` is
  ``[:, h, :]`` of the q, k, v kernels, ``[h, :]`` of their biases (when the mask penalises
  them: it does by default, they are 2-D) and ``[h, :, :]`` of the output kernel. Any other
  leaf (the output bias, q/k layer norms) is ``"unstructured"``.

  Args:
    attention: the layer's params (a dict or ``nnx.State`` with the projections' subtrees).
    group: the name of the group set, unique to the layer (e.g. ``"blocks/0/heads"``).
    projections: the names of the q, k, v projections.
    out: the name of the output projection.

  Returns:
    A tree with ``attention``'s structure holding :func:`tied` leaves, to place in a
    ``structure`` tree.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> proj = lambda: {"kernel": jnp.zeros((2, 4, 1)), "bias": jnp.zeros((4, 1))}
    >>> attn = {"query": proj(), "key": proj(), "value": proj(),  # 4 heads of width 1
    ...         "out": {"kernel": jnp.zeros((4, 1, 2)), "bias": jnp.zeros(2)}}
    >>> s = so.head_groups(attn, "heads")  # nnx.state(an nnx.MultiHeadAttention) works alike
    >>> s["query"]["kernel"], s["out"]["kernel"], s["out"]["bias"]
    (Tied(group='heads', axis=1), Tied(group='heads', axis=0), 'unstructured')
  """
  def leaf(names, x):
    if names and names[0] in projections and names[-1] in ("kernel", "bias"):
      return tied(group, np.ndim(x) - 2)  # (in, heads, head_dim) or (heads, head_dim)
    if names and names[0] == out and names[-1] == "kernel":
      return tied(group, np.ndim(x) - 3)  # (heads, head_dim, out)
    return "unstructured"

  return _map_named(leaf, attention)


def neuron_groups(first: Any, second: Any, group: str) -> tuple[Any, Any]:
  """The structure subtrees of an MLP's two linear layers: each hidden neuron one group.

  Neuron ``j`` is column ``[:, j]`` of the first kernel ``(d, hidden)`` (and its bias ``[j]``
  when the mask penalises it: by default it does not, biases are 1-D) and row ``[j, :]`` of
  the second kernel ``(hidden, d)``; the second bias is ``"unstructured"``.

  Args:
    first: the first layer's params (``{"kernel", "bias"}``, a dict or ``nnx.State``).
    second: the second layer's params.
    group: the name of the group set, unique to the MLP (e.g. ``"blocks/0/neurons"``).

  Returns:
    ``(first_structure, second_structure)``, trees with the layers' structures.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> fc1 = {"kernel": jnp.zeros((4, 16)), "bias": jnp.zeros(16)}
    >>> fc2 = {"kernel": jnp.zeros((16, 4)), "bias": jnp.zeros(4)}
    >>> so.neuron_groups(fc1, fc2, "mlp")
    ({'bias': Tied(group='mlp', axis=0), 'kernel': Tied(group='mlp', axis=1)}, {'bias': 'unstructured', 'kernel': Tied(group='mlp', axis=0)})
  """
  def in_first(names, x):
    return tied(group, np.ndim(x) - 1)  # the kernel's columns, the bias's entries

  def in_second(names, x):
    return tied(group, 0) if names and names[-1] == "kernel" else "unstructured"

  return _map_named(in_first, first), _map_named(in_second, second)


@dataclasses.dataclass(frozen=True)
class GroupSet:
  """The groups tied to one name: ``size`` groups, each with ``count`` weights spread over
  the ``members`` (flattened leaf index, tied axis)."""

  name: str
  size: int
  count: int
  members: tuple[tuple[int, int], ...]


def group_sets(structures: list, params: Any) -> list[GroupSet]:
  """The tied group sets of the per-leaf ``structures`` (as :func:`leaf_structures` gives
  them), in order of first appearance; errors name the leaf."""
  found: dict[str, dict] = {}
  for i, ((path, x), st) in enumerate(zip(jax.tree_util.tree_leaves_with_path(params),
                                          structures)):
    if not isinstance(st, Tied):
      continue
    shape = tuple(np.shape(x))
    where = f"{_checks.caller()}: leaf {_tree.leaf_name(path)}"
    if not -len(shape) <= st.axis < len(shape):
      raise ValueError(f"{where} has shape {shape}; its tied axis {st.axis} (group set "
                       f"{st.group!r}) is out of range for ndim {len(shape)}.")
    axis = st.axis % len(shape)
    entry = found.setdefault(st.group, dict(size=shape[axis], count=0, members=[],
                                            first=(_tree.leaf_name(path), axis)))
    if shape[axis] != entry["size"]:
      name, first_axis = entry["first"]
      raise ValueError(
          f"{where} has {shape[axis]} slices along its tied axis {axis} (shape {shape}), but "
          f"leaf {name} has {entry['size']} along axis {first_axis}: the leaves of group set "
          f"{st.group!r} must have the same number of groups.")
    entry["count"] += math.prod(shape) // max(shape[axis], 1)
    entry["members"].append((i, axis))
  return [GroupSet(name, e["size"], e["count"], tuple(e["members"])) for name, e in found.items()]


def group_view(x: jax.Array, axis: int, size: int) -> tuple[int, ...]:
  """The shape of a per-group array broadcast against a leaf: ``size`` along ``axis``."""
  return tuple(size if k == axis else 1 for k in range(np.ndim(x)))


def group_sums(x: jax.Array, axis: int, dtype) -> jax.Array:
  """(groups,) sum of |x| over every axis but ``axis``: a reduction that shards like x."""
  others = tuple(k for k in range(x.ndim) if k != axis)
  return jnp.sum(jnp.abs(x), axis=others, dtype=dtype)


def _reduced_axes(shape: tuple[int, ...], structure: Any, kernel_layout: str,
                  where: str) -> tuple[int, ...] | None:
  """Axes a leaf's magnitude is averaged over; None for leaves without l1 or in tied groups."""
  if structure is None or isinstance(structure, Tied):
    return None  # outside the mask (biases, BatchNorm by default), or weighted by its groups
  if not isinstance(structure, str) or structure not in STRUCTURES:
    raise ValueError(f"{where}: structure must be one of {STRUCTURES} or so.tied(group, axis); "
                     f"got {structure!r}.")
  if structure == "unstructured":
    return ()
  spatial, inputs, _ = conv_axes(shape, kernel_layout, where)
  if structure == "kernel":
    return spatial  # each (in, out) kernel
  return tuple(sorted((*spatial, inputs)))  # each output channel


def leaf_structures(structure: Any, params: Any, mask: Any) -> list:
  """Per leaf (flattened order): its structure, or None outside the mask.

  A string gives 4-D leaves (2-D convolutions) that structure and every other
  leaf ``"unstructured"``; a tree or callable names each leaf's structure, so
  1-D and 3-D convolutions are structured only when the user says so.
  """
  leaves = jax.tree.leaves(params)
  if not leaves:  # an empty tree, or optax.tree.map_params's placeholder: a callable can't read it
    return []
  selected = jax.tree.leaves(_checks.resolve_mask(mask, params))
  if isinstance(structure, str):
    per_leaf = [structure if x.ndim == 4 else "unstructured" for x in leaves]
  else:
    tree = structure(params) if callable(structure) else structure
    per_leaf = jax.tree.leaves(_checks.broadcast_prefix("structure tree", tree, params))
  return [st if m else None for st, m in zip(per_leaf, selected)]


def _weight_shape(shape: tuple[int, ...], axes: tuple[int, ...] | None):
  if axes is None:
    return ()
  return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _mean_magnitude(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """Mean of |x| over ``axes``, keeping dims."""
  if not axes:
    return jnp.abs(x)
  k = len(axes)
  count = math.prod(x.shape[i] for i in axes)
  if axes == tuple(range(k)) and k < x.ndim and count <= 64:
    # A sum of the leading slices (HWIO kernels): XLA:CPU reduces over leading axes ~50x slower.
    flat = jnp.abs(x).reshape(count, *x.shape[k:])
    total = flat[0]
    for i in range(1, count):
      total = total + flat[i]
    return (total / count).reshape((1,) * k + x.shape[k:])
  return jnp.mean(jnp.abs(x), axis=axes, keepdims=True)


@_checks.names_errors
def uniform_l1_weights(mask: _types.Mask | None = None) -> _types.Weighting:
  r"""Plain l1: weight 1 on the leaves in ``mask`` (default: ``ndim >= 2``), 0 elsewhere.

  The weights are one scalar per leaf, so a threshold accumulated from them
  costs no parameter-sized state.

  Args:
    mask: a tree of bools with the params' structure (or a prefix of it), or a
      callable ``params -> tree``, selecting the penalised leaves. Default: leaves
      with ``ndim >= 2`` (kernels, not biases or normalisation scales).

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> w = so.uniform_l1_weights()
    >>> params = {"b": jnp.zeros(3), "w": jnp.ones((2, 3))}
    >>> weights, _ = w.update(w.init(params), params)
    >>> weights
    {'b': Array(0., dtype=float32), 'w': Array(1., dtype=float32)}
  """

  def init_fn(params):
    _checks.check_float_params(params)
    _checks.resolve_mask(mask, params)
    return ()

  def update_fn(state, params):
    selected = _checks.resolve_mask(mask, params)
    weights = jax.tree.map(lambda x, m: jnp.asarray(1.0 if m else 0.0, x.dtype), params, selected)
    return weights, state

  return _types.Weighting(init_fn, update_fn, layout="scalar")


class LogL1WeightsState(NamedTuple):
  count: jax.Array  # int32
  # The running average r: like the params in unstructured mode (zeros outside the mask);
  # in kernel/channel mode one packed buffer of the reduced shapes (see _tree.pack), followed
  # by one (groups,) array per tied group set.
  magnitude: Any


@_checks.names_errors
def log_l1_weights(
    learning_rate: optax.ScalarOrSchedule,
    timescale: optax.ScalarOrSchedule,
    *,
    maximum_factor: optax.ScalarOrSchedule | None = None,
    beta: optax.ScalarOrSchedule | None = None,
    structure: Any = "unstructured",
    kernel_layout: str = "HWIO",
    mask: _types.Mask | None = None,
    accumulator_dtype: Any | None = None,
) -> _types.Weighting:
  r"""Adaptive log-l1 reweighting of Siegel, Chen & Xu (2020), per leaf.

  .. math::
    \mu' = e^{-s_n/T_b}, \quad r \leftarrow \mu' r + (1-\mu')\,\mathrm{mag}(\theta_n), \quad
    w = \frac{c\,F}{1 + (F-1)\, r/\max r}

  with :math:`F = (\beta+1)/\beta` the maximum factor: a weight that is on
  average zero gets :math:`cF`, the largest one :math:`c`. :math:`w` is the
  derivative of the log penalty :math:`M\log(\beta + |\theta|/M)` (times
  :math:`\beta + 1`), evaluated at a running average of the magnitudes.

  * ``"unstructured"``: :math:`\mathrm{mag} = |\theta|`, :math:`c = 1`.
  * ``"kernel"`` (conv kernels): mean :math:`|\theta|` over each (in, out)
    kernel's spatial axes :math:`H \times W`, :math:`c = \sqrt{HW}`; whole
    kernels vanish.
  * ``"channel"`` (conv kernels): mean over :math:`H, W, I` of each output
    channel, :math:`c = \sqrt{HWI}`; whole filters vanish.
  * :func:`tied` groups (a tree or callable only): slice :math:`i` along a
    leaf's tied axis belongs to group :math:`i` of its group set, whose other
    leaves add their own slices. :math:`\mathrm{mag}` is the mean
    :math:`|\theta|` over all the group's slices in all its (masked) leaves,
    :math:`c = \sqrt{n}` with :math:`n` the weights in a group, :math:`\max r`
    is over the set's groups, and each leaf gets the group weights broadcast
    along its tied axis: whole attention heads or MLP neurons vanish
    (:func:`head_groups`, :func:`neuron_groups`). The sums are reductions of
    each leaf, which shard like the params.

  A string ``structure`` applies to 4-D leaves (2-D convolutions); every other
  leaf is unstructured. A tree of structure names with the params' structure
  (or a prefix), or a callable ``params -> tree``, chooses per leaf, which is
  how 1-D and 3-D convolutions (ndim 3 and 5) are structured: nothing is
  guessed from the rank. ``kernel_layout`` says how conv kernels are stored:
  ``"HWIO"`` (Flax, Haiku) or ``"OIHW"`` (PyTorch, Equinox).

  Other leaves in ``mask`` use the unstructured rule; leaves outside it (by
  default those with ``ndim < 2``: biases, BatchNorm) get :math:`w = 0`, as
  does a leaf whose running magnitude is all zero. Kernel and channel weights
  keep the reduced shape (size-1 axes), broadcasting against the leaf.

  Args:
    learning_rate: step size :math:`s_n` (float or schedule).
    timescale: :math:`T_b > 0` of the magnitude average.
    maximum_factor: :math:`F \ge 1` (default 500; 1 is plain l1). Give this or
      ``beta``, not both.
    beta: :math:`\beta > 0`, i.e. :math:`F = (\beta+1)/\beta`.
    structure: ``"unstructured"``, ``"kernel"`` or ``"channel"``, or a tree or
      callable naming each leaf's structure: one of those names or a
      :func:`tied` group set.
    kernel_layout: ``"HWIO"`` or ``"OIHW"``.
    mask: the penalised leaves, as in :func:`uniform_l1_weights` (default
      ``ndim >= 2``).
    accumulator_dtype: dtype the running average :math:`r` is stored in
      (default: the params'); the weights keep the params' dtype.

  Returns:
    A :class:`Weighting`.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> w = so.log_l1_weights(1.0, 1.0, maximum_factor=3.0)
    >>> params = {"w": jnp.array([[0.0, 1.0, 2.0]])}
    >>> weights, _ = w.update(w.init(params), params)
    >>> weights["w"]  # 3 / (1 + 2 r / max r)
    Array([[3. , 1.5, 1. ]], dtype=float32)

  References:
    Siegel, Chen, Xu, Training Sparse Neural Networks using Compressed Sensing, 2020.
  """
  if isinstance(structure, str) and structure not in STRUCTURES:
    raise ValueError(f"structure must be one of {STRUCTURES}; got {structure!r}.")
  if kernel_layout not in KERNEL_LAYOUTS:
    raise ValueError(f"kernel_layout must be one of {KERNEL_LAYOUTS}; got {kernel_layout!r}.")
  _checks.check_dtype("accumulator_dtype", accumulator_dtype)
  if beta is not None and maximum_factor is not None:
    raise ValueError(
        "Give either beta or maximum_factor, not both (maximum_factor = (beta + 1) / beta)."
    )
  _checks.check_hparam("learning_rate", learning_rate)
  _checks.check_hparam("timescale", timescale, positive=True)
  if beta is not None:
    _checks.check_hparam("beta", beta, positive=True)
  else:
    maximum_factor = 500.0 if maximum_factor is None else maximum_factor
    _checks.check_hparam("maximum_factor", maximum_factor)  # and >= 1, below
    if not callable(maximum_factor) and not isinstance(maximum_factor, jax.core.Tracer):
      if np.min(np.asarray(maximum_factor, np.float64)) < 1.0:
        raise ValueError(f"maximum_factor must be >= 1; got {maximum_factor!r}.")

  unstructured = isinstance(structure, str) and structure == "unstructured"

  def plan(params) -> tuple[list, list[GroupSet]]:
    """Per leaf (flattened order): the averaged axes, None outside the mask or in a tied group
    set; and the tied group sets."""
    structures = leaf_structures(structure, params, mask)
    axes = [_reduced_axes(x.shape, st, kernel_layout,
                          f"{_checks.caller()}: leaf {_tree.leaf_name(p)}")
            for (p, x), st in zip(jax.tree_util.tree_leaves_with_path(params), structures)]
    return axes, group_sets(structures, params)

  def r_shapes(leaves, axes, sets) -> list[tuple[int, ...]]:
    # A leaf of a tied group set keeps no r of its own (size 0); each set's r follows the
    # leaves', so a tree without tied groups packs as before.
    tied_leaves = {i for gs in sets for i, _ in gs.members}
    return ([(0,) if i in tied_leaves else _weight_shape(x.shape, a)
             for i, (x, a) in enumerate(zip(leaves, axes))] + [(gs.size,) for gs in sets])

  def init_fn(params):
    _checks.check_float_params(params)
    leaves, _ = jax.tree.flatten(params)
    axes, sets = plan(params)
    if unstructured:  # r has each param's shape, so it shards like the params
      return LogL1WeightsState(jnp.zeros([], jnp.int32),
                               optax.tree.zeros_like(params, dtype=accumulator_dtype))
    magnitude = _tree.pack([jnp.zeros(shape) for shape in r_shapes(leaves, axes, sets)],
                           accumulator_dtype or _tree.state_dtype(params))
    return LogL1WeightsState(jnp.zeros([], jnp.int32), magnitude)

  def update_fn(state, params):
    _checks.require_params(params)
    leaves, treedef = jax.tree.flatten(params)
    axes, sets = plan(params)
    if unstructured:
      _checks.check_tree_match("params", params, state.magnitude, shapes=False)
      r_leaves = jax.tree.leaves(state.magnitude)
    else:
      shapes = r_shapes(leaves, axes, sets)
      r_all = _tree.unpack(state.magnitude, shapes,
                           [accumulator_dtype or x.dtype for x in leaves]
                           + [state.magnitude.dtype] * len(sets))
      r_leaves, r_sets = r_all[:len(leaves)], r_all[len(leaves):]
    s = _tree.value_at(learning_rate, state.count)
    mu = jnp.exp(-s / _tree.value_at(timescale, state.count))
    if beta is not None:
      b = _tree.value_at(beta, state.count)
      factor = (b + 1) / b
    else:
      factor = _tree.value_at(maximum_factor, state.count)

    def reweight(r, mag, c, dtype):
      """The running average and the weights c F / (1 + (F - 1) r / max r)."""
      stored = r.dtype
      m = mu.astype(jnp.promote_types(stored, dtype))
      r = m * r + (1 - m) * mag
      rmax = jnp.max(r)
      f = factor.astype(dtype)
      w = c * f / (1 + (f - 1) * r / jnp.where(rmax > 0, rmax, 1))
      return jnp.where(rmax > 0, w, 0).astype(dtype), r.astype(stored)

    def leaf(x, r, axes):
      if axes is None:
        return jnp.zeros((), x.dtype), r
      c = math.sqrt(math.prod(x.shape[i] for i in axes))  # √(HW) kernel, √(HWI) channel
      return reweight(r, _mean_magnitude(x, axes), c, x.dtype)

    pairs = [leaf(x, r, a) for x, r, a in zip(leaves, r_leaves, axes)]
    weights = [w for w, _ in pairs]
    magnitude = [r for _, r in pairs]
    for k, gs in enumerate(sets):
      # A group's magnitude is the mean |θ| over its slices in every member leaf, and its
      # weight, c = √(weights in the group), is shared by all of them.
      dtype = jnp.result_type(*(leaves[i].dtype for i, _ in gs.members))
      # Summed in float32 at least: a group can hold many weights, which bfloat16 sums lose.
      acc = jnp.promote_types(jnp.promote_types(r_sets[k].dtype, dtype), jnp.float32)
      total = sum(group_sums(leaves[i], axis, acc) for i, axis in gs.members)
      w, magnitude_k = reweight(r_sets[k], (total / gs.count).astype(
          jnp.promote_types(r_sets[k].dtype, dtype)), math.sqrt(gs.count), dtype)
      for i, axis in gs.members:
        weights[i] = w.astype(leaves[i].dtype).reshape(group_view(leaves[i], axis, gs.size))
        magnitude[i] = r_leaves[i]  # the empty placeholder
      magnitude.append(magnitude_k)
    weights = treedef.unflatten(weights)
    magnitude = (treedef.unflatten(magnitude) if unstructured
                 else _tree.pack(magnitude, state.magnitude.dtype))
    return weights, LogL1WeightsState(optax.safe_increment(state.count), magnitude)

  return _types.Weighting(init_fn, update_fn, layout="params" if unstructured else "packed")
