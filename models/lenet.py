"""LeNet-300-100 and the Caffe LeNet-5, the MNIST models of the sparsity literature."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp  # noqa: F401  (the doctests use it)
from flax import nnx

from models import initializers, pooling
from models.thinning import Family, Layer, Link


class LeNet300100(nnx.Module):
  """LeNet-300-100: a 784-300-100-10 MLP with ReLUs (266,610 params on MNIST).

  The input (``[B, H, W, C]`` or already flat) is flattened, so any image size works.

  >>> from flax import nnx
  >>> model = LeNet300100(10, rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((2, 28, 28, 1))).shape
  (2, 10)
  """
  INPUT_LAYER = ("layers", 0)  # the params path of the layer that sees the image

  def __init__(
      self,
      num_classes: int = 10,
      *,
      input_shape: Sequence[int] = (28, 28, 1),
      hidden: Sequence[int] = (300, 100),
      init: initializers.InitName = "normal",
      init_scale: float = 1.0,
      rngs: nnx.Rngs,
  ):
    self.input_shape = tuple(input_shape)  # to rebuild it narrower (models.thinning)
    kernel_init = initializers.linear_init(init, init_scale)
    sizes = [math.prod(input_shape), *hidden, num_classes]
    self.layers = nnx.List([
        nnx.Linear(din, dout, kernel_init=kernel_init, rngs=rngs)
        for din, dout in zip(sizes[:-1], sizes[1:])
    ])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for layer in self.layers[:-1]:
      x = nnx.relu(layer(x))
    return self.layers[-1](x)

  def thinning_plan(self) -> Family:
    """How ``models.thin`` narrows it: every hidden layer's neurons."""
    layers = [Layer(("layers", i)) for i in range(len(self.layers))]
    links = [Link(a, b, relu=True) for a, b in zip(layers[:-1], layers[1:])]
    return Family(layers, links, lambda width: functools.partial(
        LeNet300100, width(layers[-1]), input_shape=self.input_shape,
        hidden=tuple(width(layer) for layer in layers[:-1])))


class LeNet5(nnx.Module):
  """Caffe's LeNet-5 (431,080 params on 28×28×1).

  conv 5×5×20 → maxpool 2 → conv 5×5×50 → maxpool 2 → fc 500 → ReLU → fc classes,
  valid padding and, as in Caffe's ``lenet_train_test.prototxt``, no nonlinearity
  after the convolutions.

  >>> from flax import nnx
  >>> model = LeNet5(10, rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((2, 28, 28, 1))).shape
  (2, 10)
  """
  INPUT_LAYER = ("conv1",)

  def __init__(
      self,
      num_classes: int = 10,
      *,
      input_shape: Sequence[int] = (28, 28, 1),
      features: Sequence[int] = (20, 50),
      hidden: int = 500,
      init: initializers.InitName = "normal",
      init_scale: float = 1.0,
      rngs: nnx.Rngs,
  ):
    self.input_shape = tuple(input_shape)  # to rebuild it narrower (models.thinning)
    height, width, channels = input_shape
    conv_init = initializers.conv_init(init, init_scale)
    linear_init = initializers.linear_init(init, init_scale)
    self.conv1 = nnx.Conv(channels, features[0], (5, 5), padding="VALID",
                          kernel_init=conv_init, rngs=rngs)
    self.conv2 = nnx.Conv(features[0], features[1], (5, 5), padding="VALID",
                          kernel_init=conv_init, rngs=rngs)
    for _ in range(2):  # valid 5×5 conv, then 2×2 max-pool
      height, width = (height - 4) // 2, (width - 4) // 2
    if height < 1 or width < 1:
      raise ValueError(f"LeNet5 needs inputs of at least 16×16, got {tuple(input_shape)}.")
    self.fc1 = nnx.Linear(height * width * features[1], hidden, kernel_init=linear_init, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, num_classes, kernel_init=linear_init, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = pooling.max_pool_2x2(self.conv1(x))
    x = pooling.max_pool_2x2(self.conv2(x))
    x = x.reshape((x.shape[0], -1))
    return self.fc2(nnx.relu(self.fc1(x)))

  def thinning_plan(self) -> Family:
    """How ``models.thin`` narrows it: conv1's and conv2's channels and fc1's neurons."""
    conv1, conv2, fc1, fc2 = (Layer((name,)) for name in ("conv1", "conv2", "fc1", "fc2"))
    # Caffe's LeNet-5 has no nonlinearity after the convs.
    links = [Link(conv1, conv2, relu=False), Link(conv2, fc1, relu=False),
             Link(fc1, fc2, relu=True)]
    return Family([conv1, conv2, fc1, fc2], links, lambda width: functools.partial(
        LeNet5, width(fc2), input_shape=self.input_shape,
        features=(width(conv1), width(conv2)), hidden=width(fc1)))


# Tiny variants for tests.
LeNet300100Tiny = functools.partial(LeNet300100, hidden=(32, 16))
LeNet5Tiny = functools.partial(LeNet5, features=(4, 8), hidden=32)
