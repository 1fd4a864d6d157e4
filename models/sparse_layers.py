"""Conv and linear layers whose kernels are stored as BCOO (``jax.experimental.sparse``): what
``train.export`` puts in place of a layer whose kernel is smaller that way.

A linear layer multiplies by its BCOO (``sparse_optax.compact_matmul``). BCOO has no
convolution, so a conv either scatters its kernel back to dense at each call and convolves
densely (``"densify"``: compact at rest, dense FLOPs) or multiplies the input's im2col patches
by the BCOO (``"im2col"``: only the non-zero weights are multiplied).

A kernel that holds an N:M pattern (``config.nm_pattern``) can instead be stored as its values
and their positions within each group (``NMLinear``, ``NMConv``: ``sparse_optax.nm_compress``),
rebuilt dense at each call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from flax.nnx.nn import linear as nnx_linear
from jax.experimental import sparse

import sparse_optax as so

CONV_MODES = ("densify", "im2col")


class Indices(nnx.Variable):
  """A BCOO's indices: part of a layer's weights, not a parameter."""


def _bcoo(data: jax.Array, indices: jax.Array, shape: tuple[int, ...]) -> sparse.BCOO:
  return sparse.BCOO((data, indices), shape=shape, indices_sorted=True, unique_indices=True)


def _add_bias(y: jax.Array, bias: nnx.Param | None) -> jax.Array:
  if bias is None:
    return y
  bias = bias.get_value()
  return y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)  # no implicit rank promotion


class SparseLinear(nnx.Module):
  """An ``nnx.Linear`` whose kernel is stored as a BCOO: ``x @ kernel + bias``."""

  def __init__(self, linear: nnx.Linear, kernel: sparse.BCOO):
    self.kernel_shape = tuple(kernel.shape)
    self.data = nnx.Param(kernel.data)
    self.indices = Indices(kernel.indices)
    self.bias = nnx.Param(linear.bias.get_value()) if linear.use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = _bcoo(self.data.get_value(), self.indices.get_value(), self.kernel_shape)
    return _add_bias(so.compact_matmul(x, kernel), self.bias)


def _copy_geometry(layer: nnx.Module, conv: nnx.Conv) -> None:
  """Sets ``conv``'s strides, padding, dilations and groups on ``layer``, as
  ``lax.conv_general_dilated`` takes them."""
  rank = len(conv.kernel_size)
  layer.strides = _broadcast(conv.strides, rank)
  layer.padding = nnx_linear.canonicalize_padding(conv.padding, rank)
  if not isinstance(layer.padding, str):
    layer.padding = tuple(tuple(pair) for pair in layer.padding)
  layer.input_dilation = _broadcast(conv.input_dilation, rank)
  layer.kernel_dilation = _broadcast(conv.kernel_dilation, rank)
  layer.feature_group_count = conv.feature_group_count


class SparseConv(nnx.Module):
  """A 2-D ``nnx.Conv`` (NHWC, HWIO) whose kernel is stored as a BCOO.

  ``mode="densify"`` scatters the dense kernel back at each call and convolves as
  ``nnx.Conv`` does: compact at rest, dense FLOPs. ``mode="im2col"`` multiplies the input's
  patches by the BCOO of shape ``(in · kh · kw, out)``: only non-zero weights are multiplied.
  """

  def __init__(self, conv: nnx.Conv, kernel: sparse.BCOO, mode: str):
    self.mode = mode
    self.kernel_shape = tuple(conv.kernel.get_value().shape)
    self.bcoo_shape = tuple(kernel.shape)
    self.data = nnx.Param(kernel.data)
    self.indices = Indices(kernel.indices)
    self.bias = nnx.Param(conv.bias.get_value()) if conv.use_bias else None
    self.kernel_size = tuple(conv.kernel_size)
    _copy_geometry(self, conv)
    self.precision = conv.precision

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = _bcoo(self.data.get_value(), self.indices.get_value(), self.bcoo_shape)
    if self.mode == "im2col":
      # An identity filter copies each patch exactly; HIGHEST keeps the copy exact on GPUs.
      patches = jax.lax.conv_general_dilated_patches(
          x, self.kernel_size, self.strides, self.padding,
          dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=jax.lax.Precision.HIGHEST)
      y = so.compact_matmul(patches, kernel)
    else:
      y = jax.lax.conv_general_dilated(
          x, so.from_compact(kernel), self.strides, self.padding,
          lhs_dilation=self.input_dilation, rhs_dilation=self.kernel_dilation,
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
          feature_group_count=self.feature_group_count, precision=self.precision)
    return _add_bias(y, self.bias)


def _broadcast(value: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
  if value is None:
    return (1,) * rank
  if isinstance(value, int):
    return (value,) * rank
  return tuple(value)


def sparse_layer(module: nnx.Module, conv_mode: str) -> nnx.Module | None:
  """The ``SparseLinear`` or ``SparseConv`` of a Linear or Conv whose kernel is smaller as a
  BCOO (``conv_mode``: ``"densify"`` or ``"im2col"``); None for other modules and kernels."""
  if isinstance(module, nnx.Linear):
    kernel = so.to_compact(np.asarray(module.kernel.get_value()))
    return SparseLinear(module, kernel) if isinstance(kernel, sparse.BCOO) else None
  if not isinstance(module, nnx.Conv):
    return None
  kernel = np.asarray(module.kernel.get_value())
  padding = nnx_linear.canonicalize_padding(module.padding, len(module.kernel_size))
  if (kernel.ndim != 4 or module.mask is not None
      or padding in ("CIRCULAR", "REFLECT", "CAUSAL")):
    return None  # not a plain 2-D conv: it stays as it is
  if conv_mode == "im2col":
    if (module.feature_group_count != 1 or set(_broadcast(module.input_dilation, 2)) != {1}
        or set(_broadcast(module.kernel_dilation, 2)) != {1}):
      return None
    kh, kw, cin, cout = kernel.shape
    # conv_general_dilated_patches orders a patch's features (channel, row, column).
    kernel = kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)
  compact = so.to_compact(kernel)
  return SparseConv(module, compact, conv_mode) if isinstance(compact, sparse.BCOO) else None


def _module(model: nnx.Module, path: tuple[Any, ...]) -> Any:
  for key in path:
    model = model[key] if isinstance(key, int) else getattr(model, key)
  return model


def _replace(model: nnx.Module, path: tuple[Any, ...], new: nnx.Module) -> None:
  parent, key = _module(model, path[:-1]), path[-1]
  if isinstance(key, int):
    parent[key] = new
  else:
    setattr(parent, key, new)


def store_sparse(model: nnx.Module, conv_mode: str) -> None:
  """Replaces, in place, each Linear and Conv of ``model`` whose kernel is smaller as a BCOO."""
  for path, module in list(nnx.iter_modules(model)):
    new = sparse_layer(module, conv_mode)
    if new is not None:
      _replace(model, tuple(path), new)


# --------------------------------------------------------------------------- N:M kernels


class _NMKernel(nnx.Module):
  """A layer's kernel held as its N:M values and their positions along ``in_axes``."""

  def _store(self, layer: nnx.Module, pattern: tuple[int, int], in_axes: int | tuple[int, ...],
             bias: Any) -> None:
    kernel = np.asarray(layer.kernel.get_value())
    self.kernel_shape, self.pattern, self.in_axes = tuple(kernel.shape), tuple(pattern), in_axes
    values, indices = so.nm_compress(kernel, self.pattern, axes=in_axes)
    self.values = nnx.Param(values)
    self.indices = Indices(indices)
    self.bias = None if bias is None else nnx.Param(bias.get_value())
    self.precision = layer.precision

  def kernel(self) -> jax.Array:
    return so.nm_decompress(self.values.get_value(), self.indices.get_value(), self.pattern,
                            self.kernel_shape, axes=self.in_axes)


class NMLinear(_NMKernel):
  """An ``nnx.Linear`` whose kernel satisfies an N:M pattern along its input axis, stored as
  its values (in/M, N, out) and their positions within each group (``uint8``): N/M of the
  dense bytes plus one byte per kept weight. The dense kernel is rebuilt at each call (exact:
  each entry is one stored value or zero) and multiplied as ``nnx.Linear`` does."""

  def __init__(self, linear: nnx.Linear, pattern: tuple[int, int]):
    self._store(linear, pattern, 0, linear.bias if linear.use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.dot_general(x, self.kernel(), (((x.ndim - 1,), (0,)), ((), ())),
                            precision=self.precision)
    return _add_bias(y, self.bias)


class NMConv(_NMKernel):
  """A 2-D ``nnx.Conv`` (NHWC, HWIO) whose kernel satisfies an N:M pattern along I, stored as
  :class:`NMLinear` stores its kernel; rebuilt dense at each call and convolved as
  ``nnx.Conv`` does."""

  def __init__(self, conv: nnx.Conv, pattern: tuple[int, int]):
    self._store(conv, pattern, 2, conv.bias if conv.use_bias else None)
    _copy_geometry(self, conv)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x, self.kernel(), self.strides, self.padding,
        lhs_dilation=self.input_dilation, rhs_dilation=self.kernel_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=self.feature_group_count, precision=self.precision)
    return _add_bias(y, self.bias)


class NMLinearGeneral(_NMKernel):
  """An ``nnx.LinearGeneral`` without batch axes (an attention layer's query, key, value or
  output projection) whose kernel, ``(*in_features, *out_features)``, satisfies an N:M pattern
  along its input axes (flattened), stored as :class:`NMLinear` stores its kernel; rebuilt
  dense at each call and contracted as ``nnx.LinearGeneral`` does."""

  def __init__(self, linear: nnx.LinearGeneral, pattern: tuple[int, int]):
    self.axis = tuple(linear.axis)
    self.out_features = tuple(linear.out_features)
    self._store(linear, pattern, tuple(range(len(self.axis))), linear.bias)

  def __call__(self, x: jax.Array, out_sharding: Any = None) -> jax.Array:
    axis = tuple(a % x.ndim for a in self.axis)
    y = jax.lax.dot_general(x, self.kernel(), ((axis, self.in_axes), ((), ())),
                            precision=self.precision, out_sharding=out_sharding)
    if self.bias is None:
      return y
    kept = tuple(1 for a in range(x.ndim) if a not in axis)
    return y + self.bias.get_value().reshape(*kept, *self.out_features)


def nm_layer(module: nnx.Module, pattern: tuple[int, int], axes: Any) -> nnx.Module | None:
  """The ``NMLinear``, ``NMLinearGeneral`` or ``NMConv`` of a Linear (``axes`` 0), a
  LinearGeneral without batch axes whose input axes lead its kernel, or a plain 2-D Conv
  (``axes`` 2, HWIO's I) whose kernel has the pattern; None for other modules or axes (they
  stay dense)."""
  if isinstance(module, nnx.Linear) and axes in (0, (0,)):
    return NMLinear(module, pattern)
  if isinstance(module, nnx.LinearGeneral):
    leading = tuple(range(len(tuple(module.axis))))
    if module.batch_axis or ((axes,) if isinstance(axes, int) else tuple(axes)) != leading:
      return None
    return NMLinearGeneral(module, pattern)
  if not isinstance(module, nnx.Conv) or axes not in (2, (2,)):
    return None
  padding = nnx_linear.canonicalize_padding(module.padding, len(module.kernel_size))
  if (module.kernel.get_value().ndim != 4 or module.mask is not None
      or padding in ("CIRCULAR", "REFLECT", "CAUSAL")):
    return None
  return NMConv(module, pattern)


def store_nm(model: nnx.Module, pattern: tuple[int, int],
             axes_of: dict[tuple[Any, ...], Any]) -> None:
  """Replaces, in place, each Linear and Conv of ``model`` whose kernel's params path (without
  ``kernel``) is in ``axes_of`` by its N:M form (``axes_of``: the kernel's input axes)."""
  for path, module in list(nnx.iter_modules(model)):
    if tuple(path) not in axes_of:
      continue
    new = nm_layer(module, pattern, axes_of[tuple(path)])
    if new is not None:
      _replace(model, tuple(path), new)
