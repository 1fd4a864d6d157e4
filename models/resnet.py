"""CIFAR ResNets: the wide ResNet-18 and the thin ResNet-20/32/56 of He et al. (2016)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from models import initializers
from models.thinning import Family, Layer, Link

Shortcut = Literal["projection", "zero_pad"]


class BasicBlock(nnx.Module):
  """Two 3×3 conv-BN layers plus a shortcut; ReLU after the sum.

  ``shortcut`` says what joins tensors of different shapes: ``"projection"``, a
  strided 1×1 conv + BN (option B; ResNet-18), or ``"zero_pad"``, a strided
  subsample padded with zero channels (option A, no parameters; ResNet-20/32/56
  of He et al. §4.2). ``inner_features`` is the width between the two convs
  (default ``features``; structured thinning narrows it).
  """

  def __init__(self, in_features: int, features: int, stride: int, *,
               shortcut: Shortcut, kernel_init, rngs: nnx.Rngs,
               inner_features: int | None = None):
    inner = features if inner_features is None else inner_features
    self.stride = stride
    self.pad = features - in_features
    self.conv1 = nnx.Conv(in_features, inner, (3, 3), strides=stride, padding=1,
                          use_bias=False, kernel_init=kernel_init, rngs=rngs)
    self.bn1 = initializers.batch_norm(inner, rngs=rngs)
    self.conv2 = nnx.Conv(inner, features, (3, 3), padding=1,
                          use_bias=False, kernel_init=kernel_init, rngs=rngs)
    self.bn2 = initializers.batch_norm(features, rngs=rngs)
    self.use_projection = (stride != 1 or in_features != features) and shortcut == "projection"
    if self.use_projection:
      self.projection = nnx.Conv(in_features, features, (1, 1), strides=stride,
                                 use_bias=False, kernel_init=kernel_init, rngs=rngs)
      self.projection_bn = initializers.batch_norm(features, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.use_projection:
      x = self.projection_bn(self.projection(x))
    elif self.stride != 1 or self.pad:
      x = x[:, ::self.stride, ::self.stride, :]
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (self.pad // 2, self.pad - self.pad // 2)))
    return nnx.relu(x + y)


class ResNet(nnx.Module):
  """CIFAR ResNet: 3×3 conv stem (no max-pool), stages of BasicBlocks, global
  average pool, one linear layer.

  The first block of every stage but the first halves the resolution.
  ResNet-18: stages (2, 2, 2, 2) × (64, 128, 256, 512), projection shortcuts,
  11,173,962 params on CIFAR-10. ResNet-20/32/56: stages (n, n, n) × (16, 32, 64),
  n = 3/5/9, zero-padding shortcuts (option A), 269,722 / 464,154 / 853,018
  params on CIFAR-10 (0.27M / 0.46M / 0.85M, the paper's "853K"; 1×1 projection
  shortcuts would give 272,474 / 466,906 / 855,770, i.e. 0.86M for ResNet-56).
  ``block_features``, one width per block, narrows the inner layer of each block
  (conv1's outputs; default: the stage's width).

  >>> from flax import nnx
  >>> model = ResNetTiny(10, rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((2, 32, 32, 3))).shape
  (2, 10)
  """
  INPUT_LAYER = ("stem",)

  def __init__(
      self,
      num_classes: int = 10,
      *,
      stage_sizes: Sequence[int],
      features: Sequence[int],
      shortcut: Shortcut,
      input_shape: Sequence[int] = (32, 32, 3),
      init: initializers.InitName = "normal",
      init_scale: float = 1.0,
      block_features: Sequence[int] | None = None,
      rngs: nnx.Rngs,
  ):
    if shortcut not in ("projection", "zero_pad"):
      raise ValueError(f"Unknown shortcut {shortcut!r}; expected 'projection' or 'zero_pad'.")
    if block_features is not None and len(block_features) != sum(stage_sizes):
      raise ValueError(f"block_features has {len(block_features)} widths; the stages "
                       f"{tuple(stage_sizes)} have {sum(stage_sizes)} blocks.")
    # Kept to rebuild the model with other widths (models.thinning).
    self.stage_sizes, self.features = tuple(stage_sizes), tuple(features)
    self.shortcut, self.input_shape = shortcut, tuple(input_shape)
    conv_init = initializers.conv_init(init, init_scale)
    self.stem = nnx.Conv(input_shape[-1], features[0], (3, 3), padding=1, use_bias=False,
                         kernel_init=conv_init, rngs=rngs)
    self.stem_bn = initializers.batch_norm(features[0], rngs=rngs)
    self.blocks = nnx.List()
    in_features = features[0]
    for i, (num_blocks, width) in enumerate(zip(stage_sizes, features)):
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        inner = None if block_features is None else block_features[len(self.blocks)]
        self.blocks.append(BasicBlock(in_features, width, stride, shortcut=shortcut,
                                      kernel_init=conv_init, rngs=rngs, inner_features=inner))
        in_features = width
    self.classifier = nnx.Linear(in_features, num_classes,
                                 kernel_init=initializers.linear_init(init, init_scale), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.stem_bn(self.stem(x)))
    for block in self.blocks:
      x = block(x)
    return self.classifier(jnp.mean(x, axis=(1, 2)))

  def thinning_plan(self) -> Family:
    """How ``models.thin`` narrows it: only each block's inner channels (conv1's outputs,
    conv2's inputs), since a block's outputs are added to its shortcut's."""
    layers, links, inner = [Layer(("stem",), ("stem_bn",))], [], []
    for i, block in enumerate(self.blocks):
      conv1 = Layer(("blocks", i, "conv1"), ("blocks", i, "bn1"))
      conv2 = Layer(("blocks", i, "conv2"), ("blocks", i, "bn2"))
      layers += [conv1, conv2]
      if block.use_projection:
        layers.append(Layer(("blocks", i, "projection"), ("blocks", i, "projection_bn")))
      links.append(Link(conv1, conv2, relu=True))
      inner.append(conv1)
    layers.append(Layer(("classifier",)))
    return Family(layers, links, lambda width: functools.partial(
        ResNet, width(layers[-1]), stage_sizes=self.stage_sizes, features=self.features,
        shortcut=self.shortcut, input_shape=self.input_shape,
        block_features=tuple(width(layer) for layer in inner)))


_CIFAR_THIN = dict(features=(16, 32, 64), shortcut="zero_pad")
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), features=(64, 128, 256, 512),
                             shortcut="projection")
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), **_CIFAR_THIN)
ResNet32 = functools.partial(ResNet, stage_sizes=(5, 5, 5), **_CIFAR_THIN)
ResNet56 = functools.partial(ResNet, stage_sizes=(9, 9, 9), **_CIFAR_THIN)
# Tiny variant for tests, shaped like ResNet-20/32/56 (pass shortcut="projection" for ResNet-18's).
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1), features=(8, 16), shortcut="zero_pad")
