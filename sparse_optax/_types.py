"""Types the transforms share: the `Weighting` protocol and the aliases of their signatures."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

Params = Any
WeightingState = Any
Mask = Any  # a tree of bools (the params' structure, or a prefix of it), or params -> that


class Weighting(NamedTuple):
  """A stateful map from params to a tree of non-negative per-element weights.

  It is how a threshold reaches :func:`soft_threshold`: ``update`` returns one
  array per leaf, of the leaf's shape or broadcastable to it (same rank, size-1
  axes), so that per-kernel and per-channel weights cost no parameter-sized
  buffer.

  Attributes:
    init: ``params -> state``.
    update: ``(state, params) -> (weights, new_state)``.
    layout: how state built from the weights (:func:`accumulated_threshold`'s
      running sum) is stored. ``"params"``: every weight has its param's shape
      (or is a scalar outside the penalised leaves); the sum is stored like the
      params and shards like them under ``optax.tree.map_params``.
      ``"scalar"``: every weight is 0 or 1 and never changes; the sum is one
      scalar. ``"packed"`` (any other weights): one 1-D buffer, which
      ``map_params`` leaves out.
  """

  init: Callable[[Params], WeightingState]
  update: Callable[[WeightingState, Params], tuple[Params, WeightingState]]
  layout: str = "packed"
