"""Vision Transformers (Dosovitskiy et al., 2021) small enough for CIFAR-10 on a CPU.

Patches of ``patch_size``² pixels are projected by a strided conv (``patch_embed``, HWIO
kernel ``(p, p, C, dim)``), a learned positional embedding is added (``pos_embed``,
``(1, tokens, dim)``), then ``depth`` pre-LN :class:`models.transformer.Block`\\ s, a final
LayerNorm (``norm``), the mean over tokens (global average pooling instead of a class token,
as the plain ViT baseline of Beyer, Zhai and Kolesnikov, 2022) and a linear ``head``.

Each block's layout is that of ``models.transformer``: attention head ``h`` of block ``i`` is
``blocks[i].attn.{query,key,value}.kernel[:, h, :]`` (and ``.bias[h, :]``) plus
``blocks[i].attn.out.kernel[h, :, :]``; MLP neuron ``j`` is ``blocks[i].mlp.fc1.kernel[:, j]``
(and ``.bias[j]``) plus ``blocks[i].mlp.fc2.kernel[j, :]``.

The l1 penalty (``penalty_mask``) covers the patch projection (the analogue of a CNN's first
conv), every attention and MLP kernel and the head; ``pos_embed``, the LayerNorms and the
biases stay out.

Sizes (CIFAR-10, forward FLOPs per image by XLA's cost analysis, ``python -m
benchmarks.model_flops``): ``ViTCifar`` (patch 4, dim 128, depth 4, 4 heads, MLP 256; 78.0 MFLOPs)
costs about what ResNet-20 does (75.8); ``ViTTi`` is ViT-Ti (Touvron et al., 2021: dim 192,
depth 12, 3 heads, MLP 768) at patch 4 (727.7 MFLOPs, 9.6× ResNet-20); ``ViTTiny`` (patch 7 on
28×28, dim 32, depth 2) is for tests.

>>> from flax import nnx
>>> model = ViTTiny(10, input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
>>> model(jnp.zeros((2, 28, 28, 1))).shape
(2, 10)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from models import initializers, transformer


class ViT(nnx.Module):
  """A ViT classifier; see the module docstring for the layout and the named sizes."""

  INPUT_LAYER = ("patch_embed",)

  def __init__(self, num_classes: int = 10, *, patch_size: int, dim: int, depth: int, heads: int,
               mlp_dim: int, input_shape: Sequence[int] = (32, 32, 3),
               init: initializers.InitName = "normal", init_scale: float = 1.0,
               block_widths: Sequence[tuple[int, int]] | None = None, rngs: nnx.Rngs):
    height, width, channels = input_shape
    if height % patch_size or width % patch_size:
      raise ValueError(f"patch_size={patch_size} does not divide the {height}×{width} image.")
    self.input_shape = tuple(input_shape)
    # To rebuild it narrower (models.thinning); block_widths: per block (heads, mlp_dim).
    # A tuple: the graphdef's static attributes must be hashable (jit caches on them).
    self.sizes = tuple(dict(num_classes=num_classes, patch_size=patch_size, dim=dim, depth=depth,
                            heads=heads, mlp_dim=mlp_dim, input_shape=self.input_shape).items())
    tokens = (height // patch_size) * (width // patch_size)
    self.patch_embed = nnx.Conv(channels, dim, (patch_size, patch_size), strides=patch_size,
                                padding="VALID", kernel_init=initializers.conv_init(init, init_scale),
                                rngs=rngs)
    self.pos_embed = nnx.Param(
        nnx.initializers.normal(transformer.EMBEDDING_STDDEV)(rngs.params(), (1, tokens, dim)))
    transformer.add_trunk(self, num_classes, dim, depth, heads, mlp_dim, block_widths, init=init,
                          init_scale=init_scale, rngs=rngs)

  thinning_plan = transformer.narrowing_plan  # its heads and MLP neurons

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.patch_embed(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1]) + self.pos_embed[...]
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(self.norm(x), axis=1))

  penalty_mask = staticmethod(transformer.penalty_mask)
  group_structure = staticmethod(transformer.group_structure)


def vit_params(num_classes: int, input_shape: Sequence[int], patch_size: int, dim: int,
               depth: int, heads: int, mlp_dim: int) -> int:
  """The parameter count of :class:`ViT`, by hand."""
  height, width, channels = input_shape
  tokens = (height // patch_size) * (width // patch_size)
  patch = patch_size * patch_size * channels * dim + dim
  blocks = depth * transformer.block_params(dim, heads, dim // heads, mlp_dim)
  return patch + tokens * dim + blocks + 2 * dim + dim * num_classes + num_classes


VIT_CIFAR = dict(patch_size=4, dim=128, depth=4, heads=4, mlp_dim=256)
VIT_TI = dict(patch_size=4, dim=192, depth=12, heads=3, mlp_dim=768)
VIT_TINY = dict(patch_size=7, dim=32, depth=2, heads=2, mlp_dim=64)

ViTCifar = functools.partial(ViT, **VIT_CIFAR)
ViTTi = functools.partial(ViT, **VIT_TI)
# Tiny variant for tests (MNIST-sized inputs: 16 patches of 7×7).
ViTTiny = functools.partial(ViT, **VIT_TINY)
