"""Weight initialisation shared by every model (as Siegel, Chen & Xu and He et al. initialise).

Two schemes, chosen per model with ``init=``:

* ``"normal"`` (default, the xRDA paper's plain He init): conv kernels
  ``N(0, 2/fan_in)`` (untruncated), linear kernels ``N(0, 0.01²)``.
* ``"uniform"`` (the RDA paper's scaled init): every kernel, conv or linear,
  ``U(-sqrt(3/fan_in), sqrt(3/fan_in))``.

``init_scale`` multiplies every kernel draw (a factor on the standard deviation,
so the RDA paper's "init ×c" is ``init_scale=c``). Biases are always 0 and
BatchNorm scale 1 / shift 0 (the layers' own defaults).
"""

from __future__ import annotations

from typing import Literal

import jax
from flax import nnx

InitName = Literal["normal", "uniform"]
INITS = ("normal", "uniform")
LINEAR_STDDEV = 0.01


def _scaled(init: nnx.initializers.Initializer, scale: float) -> nnx.initializers.Initializer:
  if scale == 1.0:
    return init

  def scaled_init(key: jax.Array, shape, dtype=jax.numpy.float32):
    return scale * init(key, shape, dtype)

  return scaled_init


def _check(init: str) -> None:
  if init not in INITS:
    raise ValueError(f"Unknown init {init!r}; expected one of {INITS}.")


def conv_init(init: InitName = "normal", init_scale: float = 1.0) -> nnx.initializers.Initializer:
  """Kernel initialiser of a conv layer (HWIO, fan_in = H·W·I)."""
  _check(init)
  if init == "normal":
    base = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
  else:
    base = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")
  return _scaled(base, init_scale)


def linear_init(init: InitName = "normal", init_scale: float = 1.0) -> nnx.initializers.Initializer:
  """Kernel initialiser of a dense layer (shape ``(in, out)``)."""
  _check(init)
  if init == "normal":
    base = nnx.initializers.normal(LINEAR_STDDEV)
  else:
    base = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")
  return _scaled(base, init_scale)


def batch_norm(num_features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """BatchNorm as PyTorch's default: running-average momentum 0.9 (torch's 0.1), eps 1e-5."""
  return nnx.BatchNorm(num_features, momentum=0.9, epsilon=1e-5, rngs=rngs)
