"""LOBSTER's prune-on-plateau procedure (Tartaglione et al., 2020, LOBSTER's procedure), as a hook of the training loop.

Training alternates a regularization phase (the `sparse_optax.lobster` shrinkage) with a pruning
phase. The regularization phase lasts until the validation loss plateaus: no relative improvement
of at least `tolerance` (1%) for `patience` (PWE) epochs. The pruning phase bisects a global
magnitude threshold T, keeping the largest T whose pruned model has validation loss at most
(1 + TWT) times the loss before pruning; the pruned weights are then pinned at zero for good
(`sparse_optax.freeze_zeros` in the optimizer chain keeps them there).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class PlateauDetector:
  """Says when a validation loss has not improved by `tolerance` (relative) for `patience` epochs."""

  patience: int
  tolerance: float = 0.01
  best: float = float("inf")
  epochs_without_improvement: int = 0

  def __post_init__(self):
    if self.patience < 1:
      raise ValueError(f"patience must be >= 1 epoch; got {self.patience}.")
    if not 0 <= self.tolerance < 1:
      raise ValueError(f"tolerance must lie in [0, 1); got {self.tolerance}.")

  def update(self, val_loss: float) -> bool:
    """Records one epoch's loss; True when the plateau is reached."""
    if val_loss < self.best * (1 - self.tolerance):
      self.best = val_loss
      self.epochs_without_improvement = 0
    else:
      self.epochs_without_improvement += 1
    return self.epochs_without_improvement >= self.patience

  def reset(self) -> None:
    self.best, self.epochs_without_improvement = float("inf"), 0


Mask = Callable[[Any], Any]  # params -> tree of bools: the leaves that are shrunk and pruned


def _kernels(params: Any) -> Any:
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def prune_below(params: Any, threshold: float, *, mask: Mask = _kernels) -> Any:
  """Zero every weight of the leaves ``mask(params)`` selects with |θ| < threshold."""
  return jax.tree.map(
      lambda x, m: jnp.where(jnp.abs(x) < threshold, 0, x).astype(x.dtype) if m else x,
      params, mask(params))


def bisect_threshold(
    params: Any,
    val_loss: Callable[[Any], float],
    worsening_tolerance: float,
    *,
    iterations: int = 16,
    mask: Mask = _kernels,
) -> tuple[float, Any, dict[str, float]]:
  """Largest global threshold T with val_loss(prune_below(params, T)) <= (1 + TWT)·val_loss(params).

  Bisection over [0, max |θ|] (the loss is taken as monotone in T, as the paper does).

  Returns:
    (T, pruned params, {"loss_before", "loss_after", "threshold"}).
  """
  if worsening_tolerance < 0:
    raise ValueError(f"worsening_tolerance must be >= 0; got {worsening_tolerance}.")
  base = float(val_loss(params))
  limit = (1 + worsening_tolerance) * base
  leaves = [x for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask(params))) if m]
  lo, hi = 0.0, float(max(jnp.max(jnp.abs(x)) for x in leaves)) if leaves else 0.0
  best_loss = base
  for _ in range(iterations):
    mid = 0.5 * (lo + hi)
    loss = float(val_loss(prune_below(params, mid, mask=mask)))
    if loss <= limit:
      lo, best_loss = mid, loss
    else:
      hi = mid
  pruned = prune_below(params, lo, mask=mask)
  return lo, pruned, {"loss_before": base, "loss_after": best_loss, "threshold": lo}


class PruneOnPlateau:
  """LOBSTER's pruning phase as an epoch-end callback of the training loop (LOBSTER's procedure).

  When the validation loss has plateaued, bisects the global threshold over the leaves of
  ``mask`` (give it the optimizer's shrinkage mask: what is shrunk is what is pruned) and
  zeroes the pruned weights; the optimizer's ``freeze_zeros`` pins them. The epoch's record
  then describes the pruned model. The detector's state is checkpointed with the train state (``state()`` /
  ``restore()``), so every process resumes it alike.
  """

  name = "lobster"

  def __init__(self, patience: int, worsening_tolerance: float, mask: Mask = _kernels):
    self.detector = PlateauDetector(patience)
    self.worsening_tolerance = worsening_tolerance
    self.mask = mask

  def state(self) -> dict[str, Any]:
    return {"best": jnp.asarray(self.detector.best, jnp.float32),
            "waiting": jnp.asarray(self.detector.epochs_without_improvement, jnp.int32)}

  def restore(self, saved: dict[str, Any]) -> None:
    self.detector.best = float(saved["best"])
    self.detector.epochs_without_improvement = int(saved["waiting"])

  def on_epoch_end(self, params: Any, record: dict[str, Any], loop: Any
                   ) -> tuple[Any, dict[str, Any]]:
    """``loop`` gives ``validation_loss(params)`` and ``record(params)`` (a fresh record)."""
    if self.detector.update(record["val_loss"]):
      _, params, info = bisect_threshold(params, loop.validation_loss, self.worsening_tolerance,
                                         mask=self.mask)
      self.detector.reset()
      record = {**loop.record(params), "lobster_pruned": info}
    record["lobster"] = {"best": self.detector.best,
                         "waiting": self.detector.epochs_without_improvement}
    return params, record
