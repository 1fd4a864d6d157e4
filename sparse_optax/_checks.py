"""Input checks, and the name of the public function that their errors start with.

Every public function whose errors name it (the transform and weighting
factories, ``sparsity_summary``, the compact-form functions, ``target_state``)
is decorated with :func:`names_errors`. While it runs, and while the ``init``
and ``update`` of the transform (or :class:`Weighting`) it returns run,
:func:`caller` is its own ``__name__``: no check takes a hand-typed name, so a
renamed or copied factory reports its own. The name is kept in a context
variable, set and reset around each call, so it nests: a transform that runs
another's ``init`` or ``update`` (``soft_threshold`` its threshold's, ``rigl``
its inner optimizer's) hands the name over for that call and gets it back
after it, also when it raises.

The checks run in Python, so under ``jax.jit`` (and inside ``optax.chain``,
``optax.inject_hyperparams``, ``optax.multi_transform``, which call the factory
or its functions while tracing) they run once per trace and leave nothing in
the compiled step; outside jit the name costs one context-variable set and
reset per call. Values that are traced (``inject_hyperparams``) cannot be
checked here and pass through, to be checked where they are evaluated.
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparse_optax._types import Mask, Params, Weighting

F = TypeVar("F", bound=Callable[..., Any])

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sparse_optax_caller", default=None)


def caller() -> str:
  """The name of the public function running now, for error messages."""
  # Only an undecorated helper called on its own gets the package's name.
  return _CALLER.get() or "sparse_optax"


def _as(name: str, fn: Callable) -> Callable:
  """``fn``, run with ``name`` as :func:`caller`."""

  @functools.wraps(fn)
  def run(*args, **kwargs):
    token = _CALLER.set(name)
    try:
      return fn(*args, **kwargs)
    finally:
      _CALLER.reset(token)

  return run


def names_errors(factory: F) -> F:
  """Decorates a public function so that the checks' errors start with its name.

  The name is set while it runs and, if it returns a ``GradientTransformation``
  or a :class:`Weighting`, while that one's ``init`` and ``update`` run. The
  signature is kept (``inspect.signature`` follows ``__wrapped__``), which
  ``optax.inject_hyperparams`` reads.
  """
  name = factory.__name__
  call = _as(name, factory)

  @functools.wraps(factory)
  def named(*args, **kwargs):
    out = call(*args, **kwargs)
    if isinstance(out, (optax.GradientTransformation, Weighting)):
      out = out._replace(init=_as(name, out.init), update=_as(name, out.update))
    return out

  return named  # type: ignore[return-value]


def is_concrete(*values: Any) -> bool:
  """No value is traced (Python checks on them are possible)."""
  return not any(isinstance(v, jax.core.Tracer) for v in values)


def check_step(name: str, value: Any, *, minimum: int = 0) -> None:
  """An int step count >= ``minimum``; traced values (``inject_hyperparams``) pass."""
  if isinstance(value, jax.core.Tracer):
    return
  integral = isinstance(value, (int, np.integer)) or (
      hasattr(value, "dtype") and np.ndim(value) == 0
      and np.issubdtype(np.dtype(value.dtype), np.integer))
  if isinstance(value, (bool, np.bool_)) or not integral:
    raise TypeError(f"{name} must be an int; got {value!r}.")
  if int(value) < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")


def check_dtype(name: str, value: Any) -> None:
  """``None`` or a dtype; an array means inject_hyperparams took a dtype for a schedule."""
  if value is None:
    return
  if isinstance(value, (jax.Array, np.ndarray, jax.core.Tracer)):
    raise TypeError(
        f"{name} is an array ({value!r}), not a dtype. Under optax.inject_hyperparams, name it "
        f"in static_args=({name!r},).")
  try:
    jnp.dtype(value)
  except TypeError:
    raise TypeError(f"{name} must be a dtype such as jnp.bfloat16; got {value!r}.") from None


def check_hparam(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    at_most_one: bool = False,
    allow_schedule: bool = True,
) -> None:
  """Rejects strings, bools, NaN, inf, negative (or non-positive) or out-of-range numbers.

  Schedules and traced values (inside ``jit`` or ``inject_hyperparams``) can
  only be checked where they are evaluated, so they pass through.
  """
  if value is None or isinstance(value, (str, bytes, bool, np.bool_)) or (
      hasattr(value, "dtype") and np.dtype(value.dtype) == np.bool_):
    # np.asarray("0.1" or None, float) and float(True) would succeed: a typo would train.
    raise TypeError(f"{name} must be a number, a jax.Array or a schedule; got {value!r}.")
  if callable(value):
    if not allow_schedule:
      raise TypeError(f"{name} must be a number, not a schedule; got {value!r}.")
    return
  if isinstance(value, jax.core.Tracer):
    return
  try:
    arr = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise TypeError(
        f"{name} must be a number, a jax.Array or a schedule; got {value!r}."
    ) from None
  if np.any(np.isnan(arr)):
    raise ValueError(f"{name} must not be NaN; got {value!r}.")
  if np.any(np.isinf(arr)):
    raise ValueError(f"{name} must be finite; got {value!r}.")
  if positive and np.any(arr <= 0):
    raise ValueError(f"{name} must be positive; got {value!r}.")
  if np.any(arr < 0):
    raise ValueError(f"{name} must be non-negative; got {value!r}.")
  if at_most_one and np.any(arr > 1):
    raise ValueError(f"{name} must lie in [0, 1]; got {value!r}.")


def check_float_params(params: Params) -> None:
  """Raises ``TypeError`` naming the first leaf of ``params`` that is not floating point.

  Integer or bool params would be silently truncated (every update rounds to 0); Python
  numbers have no dtype or shape for the per-leaf state.
  """
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
      kind = f"dtype {dtype}" if dtype is not None else f"type {type(x).__name__}, not an array"
      raise TypeError(
          f"{caller()}: params leaf {jax.tree_util.keystr(path) or '(root)'} has {kind}; "
          "only floating-point arrays can be trained. Convert it, or keep it out of the "
          "optimizer (optax.masked, optax.multi_transform)."
      )


def require_params(params: Params | None) -> None:
  if params is None:
    raise ValueError(
        f"{caller()} needs the current params: call `tx.update(updates, state, params)`."
    )


def check_tree_match(name: str, tree: Any, reference: Any, *, shapes: bool = True) -> None:
  """Raises a clear error when ``tree`` does not have ``reference``'s structure (and shapes)."""
  t_def, r_def = jax.tree.structure(tree), jax.tree.structure(reference)
  if t_def != r_def:
    raise ValueError(
        f"{caller()}: {name} do not match the tree the state was initialised with.\n"
        f"  got:      {t_def}\n  expected: {r_def}"
    )
  if not shapes:
    return
  for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(reference)
  ):
    if jnp.shape(a) != jnp.shape(b):
      raise ValueError(
          f"{caller()}: {name} leaf {jax.tree_util.keystr(path)} has shape "
          f"{jnp.shape(a)}, but the state was initialised with {jnp.shape(b)}."
      )


def check_packed(buffer: jax.Array, size: int) -> None:
  """A buffer of :func:`pack` holds ``size`` values: the params match the state's tree."""
  if buffer.shape != (size,):
    raise ValueError(
        f"{caller()}: params do not match the tree the state was initialised with (the state "
        f"holds {buffer.shape[0] if buffer.ndim == 1 else buffer.shape} values, these params "
        f"need {size}).")


def broadcast_prefix(what: str, prefix: Any, params: Params) -> Any:
  """``prefix`` (the params' structure, or a prefix of it) with each value copied to its leaves."""
  try:
    return jax.tree.map(lambda value, sub: jax.tree.map(lambda _: value, sub), prefix, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"{caller()}: the {what} does not match the params tree (it must have the params' "
        f"structure, or a prefix of it):\n  {what}: {jax.tree.structure(prefix)}\n"
        f"  params: {jax.tree.structure(params)}") from e


def default_mask(params: Params) -> Params:
  """Leaves with ``ndim >= 2`` (conv and linear kernels), not biases or normalisation scales."""
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def resolve_mask(mask: Mask | None, params: Params) -> Params:
  """``mask`` as a tree of Python bools with the structure of ``params``.

  The mask decides the state's shapes, so it must be concrete: Python or NumPy
  bools, never traced values. A prefix tree applies each bool to its subtree.
  """
  if isinstance(mask, (jax.Array, jax.core.Tracer)):
    # optax.inject_hyperparams takes a callable for a schedule and hands its value on.
    raise TypeError(
        f"{caller()}: mask is an array ({mask!r}), not a tree of bools or a callable. Under "
        "optax.inject_hyperparams, name a callable mask in static_args=('mask',).")
  if not jax.tree.leaves(params):  # empty tree, or optax.tree.map_params's placeholder
    return jax.tree.map(lambda _: True, params)
  if isinstance(mask, (bool, np.bool_)) and jax.tree.structure(params).num_nodes > 1:
    # Under optax.inject_hyperparams a callable mask is evaluated on the step count, which
    # turns a rank rule into one bool for every leaf: refuse rather than mask everything.
    raise TypeError(
        f"{caller()}: mask is a single bool ({mask!r}) for a tree of params; give a tree of "
        "bools or a callable. Under optax.inject_hyperparams, name a callable mask in "
        "static_args=('mask',).")
  tree = default_mask(params) if mask is None else mask(params) if callable(mask) else mask
  tree = broadcast_prefix("mask", tree, params)

  def to_bool(path, m):
    if isinstance(m, jax.core.Tracer) or not (
        isinstance(m, (bool, np.bool_)) or (getattr(m, "dtype", None) == np.bool_
                                          and np.ndim(m) == 0)):
      raise TypeError(
          f"{caller()}: mask leaf {jax.tree_util.keystr(path)} is {m!r}; the mask must hold "
          "Python bools (it decides the state's shapes, so it cannot be traced)."
      )
    return bool(m)

  return jax.tree_util.tree_map_with_path(to_bool, tree)
