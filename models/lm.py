"""A small decoder-only (GPT-style) language model over bytes or characters.

Tokens ``[B, T]`` (``T`` at most the context, ``input_shape[0]``) are looked up in
``token_embed`` (``(vocab, dim)``), a learned ``pos_embed`` (``(context, dim)``) is added,
then ``depth`` pre-LN :class:`models.transformer.Block`\\ s with a causal mask (position ``t``
attends to positions ``<= t`` only: self-attention as Vaswani et al., 2017, masked for
decoding), a final LayerNorm (``norm``) and an untied linear ``head`` give next-token logits
``[B, T, vocab]``. ``num_classes`` is the vocabulary size.

Each block's layout is that of ``models.transformer``: attention head ``h`` of block ``i`` is
``blocks[i].attn.{query,key,value}.kernel[:, h, :]`` (and ``.bias[h, :]``) plus
``blocks[i].attn.out.kernel[h, :, :]``; MLP neuron ``j`` is ``blocks[i].mlp.fc1.kernel[:, j]``
(and ``.bias[j]``) plus ``blocks[i].mlp.fc2.kernel[j, :]``.

The l1 penalty (``penalty_mask``) covers the attention and MLP kernels and the head;
``token_embed``, ``pos_embed``, the LayerNorms and the biases stay out.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> model = LMTiny(256, input_shape=(16,), rngs=nnx.Rngs(0))
>>> model(jnp.zeros((2, 16), jnp.int32)).shape
(2, 16, 256)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
from flax import nnx

from models import initializers, transformer


class DecoderLM(nnx.Module):
  """A causal Transformer language model; see the module docstring."""

  INPUT_LAYER = ("token_embed",)

  def __init__(self, num_classes: int = 256, *, dim: int, depth: int, heads: int, mlp_dim: int,
               input_shape: Sequence[int] = (128,), init: initializers.InitName = "normal",
               init_scale: float = 1.0, block_widths: Sequence[tuple[int, int]] | None = None,
               rngs: nnx.Rngs):
    (context,) = input_shape
    self.input_shape = tuple(input_shape)
    # To rebuild it narrower (models.thinning); block_widths: per block (heads, mlp_dim).
    # A tuple: the graphdef's static attributes must be hashable (jit caches on them).
    self.sizes = tuple(dict(num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                            mlp_dim=mlp_dim, input_shape=self.input_shape).items())
    embedding_init = nnx.initializers.normal(transformer.EMBEDDING_STDDEV)
    self.token_embed = nnx.Embed(num_classes, dim, embedding_init=embedding_init, rngs=rngs)
    self.pos_embed = nnx.Param(embedding_init(rngs.params(), (context, dim)))
    transformer.add_trunk(self, num_classes, dim, depth, heads, mlp_dim, block_widths, init=init,
                          init_scale=init_scale, rngs=rngs)

  thinning_plan = transformer.narrowing_plan  # its heads and MLP neurons

  def __call__(self, tokens: jax.Array) -> jax.Array:
    length = tokens.shape[-1]
    x = self.token_embed(tokens) + self.pos_embed[None, :length]
    mask = nnx.make_causal_mask(tokens)  # [B, 1, T, T]: query t sees keys <= t
    for block in self.blocks:
      x = block(x, mask)
    return self.head(self.norm(x))

  penalty_mask = staticmethod(transformer.penalty_mask)
  group_structure = staticmethod(transformer.group_structure)


def lm_params(vocab: int, context: int, dim: int, depth: int, heads: int, mlp_dim: int) -> int:
  """The parameter count of :class:`DecoderLM`, by hand."""
  blocks = depth * transformer.block_params(dim, heads, dim // heads, mlp_dim)
  return vocab * dim + context * dim + blocks + 2 * dim + dim * vocab + vocab


LM_SMALL = dict(dim=128, depth=4, heads=4, mlp_dim=512)
LM_TINY = dict(dim=32, depth=2, heads=2, mlp_dim=64)

LMSmall = functools.partial(DecoderLM, **LM_SMALL)
# Tiny variant for tests.
LMTiny = functools.partial(DecoderLM, **LM_TINY)
