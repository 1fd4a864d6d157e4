"""VGG for CIFAR with BatchNorm and one linear classifier (the xRDA paper's VGG-16/19)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from models import initializers, pooling
from models.thinning import Family, Layer, Link

# Output channels of the 3×3 convs, one inner list per stage; a 2×2 max-pool
# separates consecutive stages.
CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512),
              (512, 512, 512, 512)),
    # Five convs, 0.28M params: a CIFAR model that trains in minutes per epoch on a CPU.
    "small": ((32,), (64, 64), (128, 128)),
    "tiny": ((8,), (16,)),
}


class ConvBN(nnx.Module):
  """3×3 conv (with bias, as torchvision-style CIFAR VGGs) → BatchNorm → ReLU."""

  def __init__(self, in_features: int, out_features: int, *, kernel_init, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_features, out_features, (3, 3), padding="SAME",
                         kernel_init=kernel_init, rngs=rngs)
    self.bn = initializers.batch_norm(out_features, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


class VGG(nnx.Module):
  """CIFAR VGG: [3×3 conv (bias) → BN → ReLU]× per stage, 2×2 max-pool between stages,
  a final average pool and ONE linear layer ``channels → classes``.

  On 32×32 inputs the four max-pools leave a 2×2 map which the final 2×2 average
  pool reduces to 1×1 (implemented as a global average, so other input sizes work
  too). VGG-16 on CIFAR-10 has 14,728,266 params (14.73M, BN scale and shift
  included, running statistics not), VGG-19 20,040,522 (20.04M).

  >>> from flax import nnx
  >>> model = VGG(10, stages=CFGS["tiny"], rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((2, 32, 32, 3))).shape
  (2, 10)
  """
  INPUT_LAYER = ("stages", 0, 0, "conv")

  def __init__(
      self,
      num_classes: int = 10,
      *,
      stages: Sequence[Sequence[int]] = CFGS["vgg16"],
      input_shape: Sequence[int] = (32, 32, 3),
      init: initializers.InitName = "normal",
      init_scale: float = 1.0,
      rngs: nnx.Rngs,
  ):
    self.input_shape = tuple(input_shape)  # to rebuild it narrower (models.thinning)
    conv_init = initializers.conv_init(init, init_scale)
    in_features = input_shape[-1]
    self.stages = nnx.List()
    for stage in stages:
      layers = nnx.List()
      for features in stage:
        layers.append(ConvBN(in_features, features, kernel_init=conv_init, rngs=rngs))
        in_features = features
      self.stages.append(layers)
    self.classifier = nnx.Linear(in_features, num_classes,
                                 kernel_init=initializers.linear_init(init, init_scale), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, stage in enumerate(self.stages):
      if i > 0:
        x = pooling.max_pool_2x2(x)
      for layer in stage:
        x = layer(x)
    x = jnp.mean(x, axis=(1, 2))  # the final 2×2 average pool on 32×32 inputs
    return self.classifier(x)

  def thinning_plan(self) -> Family:
    """How ``models.thin`` narrows it: every conv's channels."""
    stages = [[Layer(("stages", i, j, "conv"), ("stages", i, j, "bn")) for j in range(len(stage))]
              for i, stage in enumerate(self.stages)]
    layers = [layer for stage in stages for layer in stage] + [Layer(("classifier",))]
    links = [Link(a, b, relu=True) for a, b in zip(layers[:-1], layers[1:])]
    return Family(layers, links, lambda width: functools.partial(
        VGG, width(layers[-1]), input_shape=self.input_shape,
        stages=tuple(tuple(width(layer) for layer in stage) for stage in stages)))


VGG11 = functools.partial(VGG, stages=CFGS["vgg11"])
VGG16 = functools.partial(VGG, stages=CFGS["vgg16"])
VGG19 = functools.partial(VGG, stages=CFGS["vgg19"])
VGGSmall = functools.partial(VGG, stages=CFGS["small"])
VGGTiny = functools.partial(VGG, stages=CFGS["tiny"])
