"""Pre-LayerNorm Transformer blocks shared by the ViT and the decoder-only language model.

A block (Vaswani et al., 2017, with the LayerNorm before each sub-layer as in GPT-2 and ViT)::

  x = x + attn(ln1(x))      # nnx.MultiHeadAttention, self-attention
  x = x + mlp.fc2(gelu(mlp.fc1(ln2(x))))

Parameter layout, which structured sparsity names groups by (keep it):

* ``attn.query`` / ``attn.key`` / ``attn.value``: kernels ``(dim, heads, head_dim)``, biases
  ``(heads, head_dim)``; ``attn.out``: kernel ``(heads, head_dim, dim)``, bias ``(dim,)``.
  Attention head ``h`` is the slices ``[:, h, :]`` of the q, k, v kernels, ``[h, :]`` of their
  biases and ``[h, :, :]`` of the out kernel.
* ``mlp.fc1``: kernel ``(dim, mlp_dim)``, bias ``(mlp_dim,)``; ``mlp.fc2``: kernel
  ``(mlp_dim, dim)``, bias ``(dim,)``. MLP neuron ``j`` is column ``[:, j]`` of fc1's kernel,
  ``[j]`` of its bias, and row ``[j, :]`` of fc2's kernel.
* ``ln1``, ``ln2``: LayerNorm ``scale`` and ``bias``, ``(dim,)``.

Initialisation follows ``models.initializers``: ``init="normal"`` draws every dense kernel
(q, k, v, out, fc1, fc2) from N(0, 0.01²); ``"uniform"`` from U(±sqrt(3/fan_in)), with fan_in
the ``dim`` inputs of q, k, v and fc1, the ``heads·head_dim`` of out, the ``mlp_dim`` of fc2.
``init_scale`` multiplies every draw. Biases start at 0, LayerNorm at scale 1, shift 0.

The l1 penalty (``penalty_mask``) covers the dense kernels; embeddings, positional embeddings,
LayerNorms and biases stay out (the library's default, ``ndim >= 2``, would take the embedding
tables and the 2-D q, k, v biases in).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models import initializers
from models.thinning import Family, Heads, Layer, Link

# Leaves of these names are never penalised or pruned: lookup tables and positions, whose
# rows a sparse optimizer should not zero (an all-zero token row is a lost token).
NOT_PENALISED = ("token_embed", "pos_embed", "ln1", "ln2", "norm")
EMBEDDING_STDDEV = 0.02  # GPT-2's and ViT's positional/token embedding scale


class Mlp(nnx.Module):
  """``fc2(gelu(fc1(x)))``; neuron ``j`` is fc1's column ``j`` (and bias ``j``), fc2's row ``j``."""

  def __init__(self, dim: int, mlp_dim: int, *, init: initializers.InitName, init_scale: float,
               rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(dim, mlp_dim, kernel_init=initializers.linear_init(init, init_scale),
                          rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, dim, kernel_init=initializers.linear_init(init, init_scale),
                          rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(nnx.gelu(self.fc1(x)))


class Block(nnx.Module):
  """One pre-LN Transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

  ``attn`` is ``nnx.MultiHeadAttention`` (q/k/v kernels ``(dim, heads, head_dim)``, out kernel
  ``(heads, head_dim, dim)``), ``mlp`` an :class:`Mlp`; see the module docstring for the layout.
  ``head_dim`` defaults to ``dim // heads``; ``mlp_dim`` is the MLP's hidden width.
  """

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, head_dim: int | None = None,
               init: initializers.InitName = "normal", init_scale: float = 1.0,
               rngs: nnx.Rngs):
    if head_dim is None:
      if dim % heads:
        raise ValueError(f"dim={dim} is not a multiple of heads={heads}; pass head_dim.")
      head_dim = dim // heads
    self.ln1 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        heads, dim, qkv_features=heads * head_dim, out_features=dim,
        # LinearGeneral draws these kernels flat, (dim, heads·head_dim) and (heads·head_dim, dim),
        # then reshapes them: the 2-D fan-in rule of linear_init is the right one.
        kernel_init=initializers.linear_init(init, init_scale),
        out_kernel_init=initializers.linear_init(init, init_scale),
        decode=False, deterministic=True, keep_rngs=False, rngs=rngs)
    self.ln2 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.mlp = Mlp(dim, mlp_dim, init=init, init_scale=init_scale, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.ln1(x), mask=mask)
    return x + self.mlp(self.ln2(x))


def blocks(dim: int, depth: int, heads: int, mlp_dim: int,
           block_widths: Sequence[tuple[int, int]] | None, *, init: initializers.InitName,
           init_scale: float, rngs: nnx.Rngs) -> nnx.List:
  """``depth`` blocks of ``heads`` heads and ``mlp_dim`` neurons, or of ``block_widths[i] =
  (heads, mlp_dim)`` each (how ``models.thin`` rebuilds a thinned model), every head of width
  ``dim // heads``."""
  if dim % heads:
    raise ValueError(f"dim={dim} is not a multiple of heads={heads}.")
  if block_widths is None:
    block_widths = [(heads, mlp_dim)] * depth
  if len(block_widths) != depth:
    raise ValueError(f"block_widths has {len(block_widths)} entries for {depth} blocks.")
  return nnx.List([Block(dim, h, m, head_dim=dim // heads, init=init, init_scale=init_scale,
                         rngs=rngs) for h, m in block_widths])


def add_trunk(model: nnx.Module, num_classes: int, dim: int, depth: int, heads: int,
              mlp_dim: int, block_widths: Sequence[tuple[int, int]] | None, *,
              init: initializers.InitName, init_scale: float, rngs: nnx.Rngs) -> None:
  """Sets the blocks, the final LayerNorm and the output head the ViT and the LM share on
  ``model``, in that order (which fixes what each draws from ``rngs``)."""
  model.blocks = blocks(dim, depth, heads, mlp_dim, block_widths, init=init,
                        init_scale=init_scale, rngs=rngs)
  model.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
  model.head = nnx.Linear(dim, num_classes,
                          kernel_init=initializers.linear_init(init, init_scale), rngs=rngs)


def narrowing_plan(model: nnx.Module) -> Family:
  """The ViT's and the LM's ``thinning_plan``: each block's attention heads and MLP neurons, the
  model rebuilt with its ``sizes`` and the widths kept (each class assigns it as its own, as
  ``models.thin`` asks)."""
  return thinning_plan(model, lambda widths: functools.partial(
      type(model), **dict(model.sizes), block_widths=widths))


def thinning_plan(model: nnx.Module, build) -> Family:
  """How ``models.thin`` narrows ``model``'s blocks: their attention heads and MLP neurons (the
  residual stream keeps its width). ``build(block_widths)`` is the model's constructor, less
  ``rngs``, with each block's ``(heads, mlp_dim)``."""
  fc = [(Layer(("blocks", i, "mlp", "fc1")), Layer(("blocks", i, "mlp", "fc2")))
        for i in range(len(model.blocks))]
  attention = [Heads(("blocks", i, "attn")) for i in range(len(model.blocks))]
  return Family(
      [layer for pair in fc for layer in pair], [Link(a, b, activation=nnx.gelu) for a, b in fc],
      lambda width: build(tuple((width(a), width(f)) for a, (f, _) in zip(attention, fc))),
      heads=attention)


def group_structure(params: Any) -> Any:
  """The ``structure=`` of ``sparse_optax.xrda`` / ``log_l1_weights`` that groups each block's
  attention heads (``so.head_groups``) and MLP neurons (``so.neuron_groups``), named
  ``blocks/<i>/heads`` and ``blocks/<i>/neurons``; every other leaf ``"unstructured"``."""
  import sparse_optax as so  # here: only this helper needs it
  structure = jax.tree.map(lambda _: "unstructured", params)
  for i, block in params["blocks"].items():
    structure["blocks"][i]["attn"] = so.head_groups(block["attn"], f"blocks/{i}/heads")
    fc1, fc2 = so.neuron_groups(block["mlp"]["fc1"], block["mlp"]["fc2"], f"blocks/{i}/neurons")
    structure["blocks"][i]["mlp"] = {"fc1": fc1, "fc2": fc2}
  return structure


def block_params(dim: int, heads: int, head_dim: int, mlp_dim: int) -> int:
  """Parameters of one :class:`Block`, by hand: q, k, v, out (kernels and biases), the MLP's two
  layers, two LayerNorms."""
  inner = heads * head_dim
  attention = 3 * (dim * inner + inner) + inner * dim + dim
  mlp = dim * mlp_dim + mlp_dim + mlp_dim * dim + dim
  return attention + mlp + 2 * 2 * dim


def penalty_mask(params: Any) -> Any:
  """Mask: the leaves an l1 penalty or pruning may zero: the weight matrices and kernels (``ndim
  >= 2``) but the embeddings and positional embeddings, and no bias, by name. Rank alone would
  penalise an embedding table and the q, k, v biases, which are 2-D ``(heads, head_dim)``."""
  def penalised(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    return (len(jnp.shape(leaf)) >= 2 and not set(names) & set(NOT_PENALISED)
            and names[-1] != "bias")
  return jax.tree_util.tree_map_with_path(penalised, params)
