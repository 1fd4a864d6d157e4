"""The published schedules: cosine step size and cosine averaging, with k = count + 1."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _tree


def _check_total(total_steps: int) -> None:
  if not isinstance(total_steps, int) or isinstance(total_steps, bool):
    raise TypeError(f"total_steps must be an int; got {total_steps!r}.")
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive; got {total_steps}.")


def _cosine_ramp(count, total_steps: int):
  """½ (1 − cos(π k / N)) with k = count + 1, clipped to k ≤ N: 0 → 1."""
  k = jnp.minimum(count + 1, total_steps)
  return 0.5 * (1 - jnp.cos(jnp.pi * k / total_steps))


def cosine_averaging(total_steps: int) -> optax.Schedule:
  r"""The averaging ramp of Siegel, Chen & Xu (2020):
  :math:`\alpha_k = \tfrac12(1 - \cos(\pi k/N))`, :math:`k = n + 1`.

  :math:`\alpha` rises from 0 (proximal SGD) to 1 (RDA) while the step size
  decays, so the threshold grows slowly and training stays robust.

  Args:
    total_steps: :math:`N`, the number of optimizer steps of the run.

  Returns:
    A schedule ``count -> alpha``.

  Example:
    >>> import sparse_optax as so
    >>> alpha = so.cosine_averaging(4)
    >>> [round(float(alpha(n)), 4) for n in range(4)]
    [0.1464, 0.5, 0.8536, 1.0]
  """
  _check_total(total_steps)
  return lambda count: _cosine_ramp(count, total_steps)


def cosine_decay(init_value: float, total_steps: int) -> optax.Schedule:
  r"""The step size of Siegel, Chen & Xu (2020):
  :math:`s_k = \tfrac12 s_0 (1 + \cos(\pi k/N))`, :math:`k = n + 1`.

  Unlike ``optax.cosine_decay_schedule`` (:math:`k = n`), the last step of the
  run has step size 0, as in the authors' code.

  Args:
    init_value: :math:`s_0 \ge 0`.
    total_steps: :math:`N`.

  Returns:
    A schedule ``count -> step size``.

  Example:
    >>> import sparse_optax as so
    >>> lr = so.cosine_decay(1.0, 4)
    >>> [round(float(lr(n)), 4) for n in range(4)]
    [0.8536, 0.5, 0.1464, 0.0]
  """
  _checks.check_hparam("init_value", init_value, allow_schedule=False)
  _check_total(total_steps)
  return lambda count: init_value * (1 - _cosine_ramp(count, total_steps))


def rda_averaging() -> optax.Schedule:
  r""":math:`\alpha_n = \sqrt{(n-1)/n}`, :math:`n = \text{count} + 1`: Xiao's RDA as a dual
  average."""
  return lambda count: jnp.sqrt(count / (count + 1.0))


def rda_step_size(gamma: optax.ScalarOrSchedule) -> optax.Schedule:
  r""":math:`s_n = 1/(\gamma\sqrt{n})`, :math:`n = \text{count} + 1`: the RDA step."""
  _checks.check_hparam("gamma", gamma, positive=True)
  return lambda count: 1.0 / (_tree.value_at(gamma, count) * jnp.sqrt(count + 1.0))
