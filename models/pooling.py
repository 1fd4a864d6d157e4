"""2×2 max-pooling that trains fast on CPU."""

from __future__ import annotations

import jax


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2×2 max-pool, stride 2, VALID (an odd last row or column is dropped), on NHWC.

  The same outputs as ``nnx.max_pool(x, (2, 2), strides=(2, 2))``, as a reshape and a max: its
  gradient is a comparison with the max instead of XLA's select-and-scatter, which made a LeNet-5
  training step on one CPU core 1.7× slower (benchmarks/results/train_step_pooling.txt). The
  gradients agree except where a window's maximum is tied, which the reshape splits evenly
  between the tied inputs rather than giving to the first.
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool_2x2 takes NHWC inputs, got shape {x.shape}.")
  n, h, w, c = x.shape
  if h < 2 or w < 2:
    raise ValueError(f"max_pool_2x2 needs at least 2×2 spatial inputs, got {h}×{w}.")
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
