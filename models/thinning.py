"""Structured thinning: a sparse model rebuilt narrower, without the channels it does not use.

A channel (a conv's output channel, a linear layer's neuron) goes when that leaves the
eval-mode outputs unchanged:

* nothing reads it: the next layer's weights on it are all zero (kernel-mode sparsity, or
  unstructured sparsity that zeroes a whole input slice);
* it is dead: its kernel slice or its BatchNorm scale is all zero, so it outputs the constant
  ``c = act(bn(bias))`` (``act`` the ReLU where the model has one there), and either ``c == 0``,
  or the next layer sees ``c`` at every input position — a linear layer, or a conv without
  padding (max-pools and global means keep a constant) — and ``c`` times the next layer's
  weights on the channel folds into that layer's bias. Behind a padded conv the border
  positions see zeros, not ``c``, so there a dead channel with ``c != 0`` stays.

Attention heads (``Heads``: an ``nnx.MultiHeadAttention`` with q/k/v kernels ``(in, heads,
head_dim)``, biases ``(heads, head_dim)``, out kernel ``(heads, head_dim, out)``) go the same
way: a head goes when its out slice ``[h, :, :]`` is all zero (nothing reads it), or when its
value slice ``[:, h, :]`` is (its values are the bias ``b_v[h]`` at every position, and the
attention weights sum to one, so it outputs ``b_v[h]`` whatever its q and k: ``b_v[h] @ out[h]``
folds into the out bias). MLP neurons are channels of a ``Link`` whose ``activation`` is the
MLP's (e.g. GELU): a neuron with a zero column in the first kernel outputs ``act(b[j])``, folded
into the second layer's bias.

Removals repeat until none applies: a fold can leave a channel of the next layer dead, and
removing a layer's outputs can leave its inputs unread. A layer keeps at least one channel, an
attention layer one head.

A model family says how it thins in its own module, as it says ``INPUT_LAYER``: its class
defines ``thinning_plan(self) -> Family``, which gives its conv/linear layers, the links
(``Link``) between them whose channels may go, and how to build the model with other widths. A subclass
must define its own. This module holds only the mechanics, the same for every family.

>>> from flax import nnx
>>> import models
>>> model = models.get_model("lenet300100_tiny", 10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0))
>>> model.layers[0].kernel.set_value(model.layers[0].kernel.get_value().at[:, :12].set(0.0))
>>> thinned, report = thin(model)  # 12 of the 32 first hidden neurons are dead
>>> type(thinned).__name__, thinned.layers[0].kernel.shape
('LeNet300100', (64, 20))
>>> report.params_before - report.params_after  # 12 × (64 + 1) + 12 × 16
972
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Path = tuple[Any, ...]  # attribute names and list indices from the model to a module


@dataclasses.dataclass(frozen=True)
class LayerThinning:
  """One conv or linear layer with its BatchNorm: widths and parameter counts before and after.

  ``kept`` holds the original indices of the output channels kept.
  """

  name: str
  in_before: int
  in_after: int
  out_before: int
  out_after: int
  params_before: int
  params_after: int
  kept: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class HeadThinning:
  """One attention layer: heads and parameters (q, k, v, out) before and after.

  ``kept`` holds the original indices of the heads kept.
  """

  name: str
  heads_before: int
  heads_after: int
  params_before: int
  params_after: int
  kept: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ThinningReport:
  """What ``thin`` removed: every conv/linear layer in forward order, every attention layer's
  heads, and the parameter totals."""

  layers: tuple[LayerThinning, ...]
  params_before: int
  params_after: int
  heads: tuple[HeadThinning, ...] = ()

  def __str__(self) -> str:
    rows = [("layer", "inputs", "outputs", "params")]
    rows += [(l.name, f"{l.in_before} -> {l.in_after}", f"{l.out_before} -> {l.out_after}",
              f"{l.params_before:,} -> {l.params_after:,}") for l in self.layers]
    rows += [(a.name, "", f"{a.heads_before} -> {a.heads_after} heads",
              f"{a.params_before:,} -> {a.params_after:,}") for a in self.heads]
    rows.append(("total", "", "", f"{self.params_before:,} -> {self.params_after:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


@dataclasses.dataclass(frozen=True)
class Layer:
  """A conv or linear layer that ``thin`` may narrow, and the BatchNorm right after it, if any."""

  path: Path              # of the nnx.Conv / nnx.Linear
  bn: Path | None = None  # of its BatchNorm


@dataclasses.dataclass(frozen=True)
class Link:
  """``producer``'s output channels (after its BatchNorm, and a ReLU if ``relu`` or another
  elementwise ``activation`` such as ``nnx.gelu``) feed ``consumer`` and nothing else, so that
  ``thin`` may remove them from both.

  Between the two, the model may only act on each channel alone and keep a constant map
  constant (max-pools, global means, a flatten of an (h, w, c) map, channels fastest).
  """

  producer: Layer
  consumer: Layer
  relu: bool = False
  activation: Callable[[jax.Array], jax.Array] | None = None  # instead of relu

  def __post_init__(self):
    if self.relu and self.activation is not None:
      raise ValueError("Link: give relu=True or an activation, not both.")


@dataclasses.dataclass(frozen=True)
class Heads:
  """An ``nnx.MultiHeadAttention`` (self-attention, as many k/v heads as q heads) whose heads
  ``thin`` may remove: at ``path``, with ``query``, ``key``, ``value`` and ``out``."""

  path: Path


@dataclasses.dataclass(frozen=True)
class Family:
  """How a model thins, as its class's ``thinning_plan`` gives it."""

  layers: Sequence[Layer]  # every conv/linear layer, forward order (the report's rows)
  links: Sequence[Link]    # the only places where channels go
  # ``build(width)``: the constructor, less ``rngs``, of the model whose layers have
  # ``width(layer)`` output channels and whose attention layers ``width(heads)`` heads.
  build: Callable[[Callable[[Layer | Heads], int]], Callable[..., nnx.Module]]
  heads: Sequence[Heads] = ()  # attention layers whose heads may go


def thin(model: nnx.Module, params: Any = None,
         batch_stats: Any = None) -> tuple[nnx.Module, ThinningReport]:
  """The narrower model of ``model``'s family without its removable channels (module docstring).

  Args:
    model: a model whose class defines ``thinning_plan`` (every model of ``models.MODELS``).
    params, batch_stats: optional trees (pure dicts as ``nnx.to_pure_dict`` gives, as the
      training loop's state holds them, or ``nnx.State``) used instead of the model's own
      parameters and BatchNorm statistics; they must match the model's tree and shapes.

  Returns:
    ``(thinned, report)``: a new model of the same class built with the narrower widths, in
    eval mode, whose eval-mode outputs equal ``model``'s (up to float rounding), and a
    ``ThinningReport``. ``model`` is left unchanged.

  Raises:
    TypeError: for a model whose class defines no ``thinning_plan``, or leaves that are not
      arrays.
    ValueError: for ``params``/``batch_stats`` that do not match the model.
  """
  family = _plan(model)
  layers, links = family.layers, family.links
  values = _read(model, nnx.Param, params, "params")
  param_paths = set(values)
  values.update(_read(model, nnx.BatchStat, batch_stats, "batch_stats"))
  before = dict(values)
  kept = {layer.path: np.arange(values[layer.path + ("kernel",)].shape[-1]) for layer in layers}
  kept_heads = {a.path: np.arange(_head_count(a, values)) for a in family.heads}

  changed = True
  while changed:
    changed = False
    for link in links:
      keep = _thin_link(model, link, values)
      if keep is not None:
        kept[link.producer.path] = kept[link.producer.path][keep]
        changed = True
    for attention in family.heads:
      keep = _thin_heads(attention, values)
      if keep is not None:
        kept_heads[attention.path] = kept_heads[attention.path][keep]
        changed = True

  def width(layer: Layer | Heads) -> int:
    if isinstance(layer, Heads):
      return _head_count(layer, values)
    return values[layer.path + ("kernel",)].shape[-1]

  thinned = _rebuild(family.build(width), values)
  thinned.eval()

  def count(tree: dict[Path, np.ndarray], layer: Layer) -> int:
    keys = [layer.path + ("kernel",), layer.path + ("bias",)]
    if layer.bn is not None:
      keys += [layer.bn + ("scale",), layer.bn + ("bias",)]
    return sum(tree[key].size for key in keys if key in tree)

  rows = []
  for layer in layers:
    kernel, new_kernel = before[layer.path + ("kernel",)], values[layer.path + ("kernel",)]
    rows.append(LayerThinning(
        name=".".join(map(str, layer.path)),
        in_before=kernel.shape[-2], in_after=new_kernel.shape[-2],
        out_before=kernel.shape[-1], out_after=new_kernel.shape[-1],
        params_before=count(before, layer), params_after=count(values, layer),
        kept=tuple(int(i) for i in kept[layer.path])))
  heads = tuple(HeadThinning(
      name=".".join(map(str, a.path)), heads_before=_head_count(a, before),
      heads_after=_head_count(a, values), params_before=_attention_size(a, before),
      params_after=_attention_size(a, values),
      kept=tuple(int(i) for i in kept_heads[a.path])) for a in family.heads)
  report = ThinningReport(
      layers=tuple(rows),
      params_before=sum(before[path].size for path in param_paths),
      params_after=sum(values[path].size for path in param_paths),
      heads=heads)
  return thinned, report


_PROJECTIONS = ("query", "key", "value")


def _head_count(attention: Heads, values: dict[Path, np.ndarray]) -> int:
  return values[attention.path + ("query", "kernel")].shape[1]


def _attention_size(attention: Heads, values: dict[Path, np.ndarray]) -> int:
  return sum(values[key].size for key in values
             if key[:len(attention.path)] == attention.path
             and key[len(attention.path)] in (*_PROJECTIONS, "out"))


def _thin_heads(attention: Heads, values: dict[Path, np.ndarray]) -> np.ndarray | None:
  """Removes the heads of ``attention`` in ``values`` whose outputs are unread or constant; the
  mask kept, or None."""
  at = lambda *names: attention.path + names
  heads = _head_count(attention, values)
  shapes = {name: values[at(name, "kernel")].shape for name in (*_PROJECTIONS, "out")}
  if any(shapes[name][1] != heads for name in _PROJECTIONS) or shapes["out"][0] != heads:
    raise ValueError(f"thin: {_name(attention.path)} is not self-attention with as many k/v heads "
                     f"as q heads in nnx.MultiHeadAttention's layout: kernels {shapes}.")
  out = values[at("out", "kernel")]  # (heads, head_dim, out)
  unread = ~out.reshape(heads, -1).any(axis=1)
  silent = ~values[at("value", "kernel")].any(axis=(0, 2))  # values = the v bias everywhere
  v_bias = values.get(at("value", "bias"))
  constant = (np.zeros((heads, out.shape[1]), out.dtype) if v_bias is None else v_bias)
  nonzero = constant.any(axis=1)
  remove = unread | (silent & (~nonzero | (at("out", "bias") in values)))
  if remove.all():
    remove[0] = False  # an attention layer without heads is no model
  if not remove.any():
    return None
  fold = remove & silent & ~unread & nonzero
  if fold.any():
    # Attention weights sum to one over the keys, so a silent head outputs its v bias.
    bias = values[at("out", "bias")]
    shift = np.einsum("hd,hdo->o", constant[fold].astype(np.float64),
                      out[fold].astype(np.float64))
    values[at("out", "bias")] = (bias.astype(np.float64) + shift).astype(bias.dtype)
  keep = ~remove
  for name in _PROJECTIONS:
    values[at(name, "kernel")] = values[at(name, "kernel")][:, keep]
    if at(name, "bias") in values:
      values[at(name, "bias")] = values[at(name, "bias")][keep]
  values[at("out", "kernel")] = out[keep]
  return keep


def _plan(model: nnx.Module) -> Family:
  """The thinning plan that ``model``'s own class declares."""
  # The class's own, not an inherited one: a subclass may take other constructor arguments or
  # add layers.
  plan = vars(type(model)).get("thinning_plan")
  if plan is None:
    import models  # here: the model modules import this one
    families = dict.fromkeys(getattr(cls, "func", cls) for cls in models.MODELS.values())
    names = ", ".join(cls.__name__ for cls in families if "thinning_plan" in vars(cls))
    raise TypeError(f"thin: unsupported model {type(model).__name__}; it thins {names} "
                    "(every model of models.MODELS).")
  return plan(model)


def _thin_link(model: nnx.Module, link: Link, values: dict[Path, np.ndarray]) -> np.ndarray | None:
  """Removes what it can of ``link.producer``'s outputs in ``values``; the mask kept, or None."""
  producer, consumer = link.producer, link.consumer
  width = values[producer.path + ("kernel",)].shape[-1]
  next_kernel = values[consumer.path + ("kernel",)]
  by_channel = _by_input_channel(next_kernel, width)  # (positions, width, outputs)
  unread = ~by_channel.any(axis=(0, 2))
  dead, constant = _constant_outputs(model, link, values)
  consumer_module = _module(model, consumer.path)
  foldable = consumer_module.use_bias and _sees_constants_everywhere(consumer_module)
  remove = unread | (dead & ((constant == 0) | foldable))
  if remove.all():
    remove[0] = False  # a zero-width layer is no model
  if not remove.any():
    return None
  fold = remove & dead & ~unread
  if foldable and fold.any():
    bias = values[consumer.path + ("bias",)]
    shift = np.einsum("pko,k->o", by_channel[:, fold].astype(np.float64),
                      constant[fold].astype(np.float64))
    values[consumer.path + ("bias",)] = (bias.astype(np.float64) + shift).astype(bias.dtype)

  keep = ~remove
  names = [producer.path + ("kernel",), producer.path + ("bias",)]
  if producer.bn is not None:
    names += [producer.bn + (name,) for name in ("scale", "bias", "mean", "var")]
  for name in names:
    if name in values:
      values[name] = values[name][..., keep]
  narrow = by_channel[:, keep]
  if next_kernel.ndim == 2:  # (positions × channels, outputs), the channel varying fastest
    values[consumer.path + ("kernel",)] = narrow.reshape(-1, next_kernel.shape[-1])
  else:  # HWIO
    values[consumer.path + ("kernel",)] = narrow.reshape(
        *next_kernel.shape[:-2], narrow.shape[1], next_kernel.shape[-1])
  return keep


def _by_input_channel(kernel: np.ndarray, width: int) -> np.ndarray:
  """A consumer's kernel as (input positions, channels, outputs).

  A conv's positions are its H×W taps; a linear layer after a flatten of an (h, w, c) map
  has one row per (position, channel), the channel varying fastest.
  """
  return kernel.reshape(-1, width, kernel.shape[-1])


def _constant_outputs(model: nnx.Module, link: Link,
                      values: dict[Path, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Which of the producer's channels are constant, and their value after BatchNorm and ReLU."""
  producer = link.producer
  kernel = values[producer.path + ("kernel",)]
  width = kernel.shape[-1]
  dead = ~kernel.reshape(-1, width).any(axis=0)
  x = jnp.asarray(values.get(producer.path + ("bias",), np.zeros(width, kernel.dtype)))
  if producer.bn is not None:
    scale = values[producer.bn + ("scale",)]
    dead |= scale == 0  # then the BatchNorm outputs its shift, whatever its input
    epsilon = _module(model, producer.bn).epsilon
    mean, var, shift = (jnp.asarray(values[producer.bn + (name,)])
                        for name in ("mean", "var", "bias"))
    # As flax's BatchNorm computes it with running statistics, so that a zero stays a zero.
    x = (x - mean) * (jax.lax.rsqrt(var + epsilon) * jnp.asarray(scale)) + shift
  if link.relu:
    x = jax.nn.relu(x)
  elif link.activation is not None:
    x = link.activation(x)
  return dead, np.asarray(x)


def _sees_constants_everywhere(module: nnx.Module) -> bool:
  """Whether every input position of ``module`` is a real one, never padding."""
  if isinstance(module, nnx.Linear):
    return True
  padding = module.padding
  if isinstance(padding, str):
    return padding.upper() == "VALID"
  if isinstance(padding, int):
    return padding == 0
  return all(np.all(np.asarray(pad) == 0) for pad in padding)


def _module(model: nnx.Module, path: Path) -> Any:
  for key in path:
    model = model[key] if isinstance(key, int) else getattr(model, key)
  return model


def _name(path: Sequence[Any]) -> str:
  return "/".join(map(str, path))


def _flatten(tree: Any, what: str, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  if isinstance(tree, nnx.State):
    tree = nnx.to_pure_dict(tree)
  if not isinstance(tree, Mapping):
    if not prefix:
      raise TypeError(f"thin: {what} must be a nested dict (nnx.to_pure_dict) or an nnx.State, "
                      f"got {type(tree).__name__}.")
    return {prefix: tree}
  flat = {}
  for key, subtree in tree.items():
    # str(key): a checkpoint restores nnx.List indices as the strings "0", "1", ...
    flat.update(_flatten(subtree, what, prefix + (str(key),)))
  return flat


def _read(model: nnx.Module, kind: type, given: Any, what: str) -> dict[Path, np.ndarray]:
  """The model's ``kind`` variables by path, as NumPy arrays, or ``given`` checked against them."""
  own = {path: var.get_value() for path, var in nnx.to_flat_state(nnx.state(model, kind))}
  if given is None:
    return {path: np.asarray(value) for path, value in own.items()}
  family = type(model).__name__
  by_name = {tuple(map(str, path)): path for path in own}
  flat = _flatten(given, what)
  for key in flat:
    if key not in by_name:
      raise ValueError(f"thin: {what} do not match the {family} model: {_name(key)!r} is not "
                       f"one of its {what}.")
  values = {}
  for key, path in by_name.items():
    if key not in flat:
      raise ValueError(f"thin: {what} do not match the {family} model: {_name(key)!r} is "
                       "missing.")
    leaf = flat[key]
    if isinstance(leaf, nnx.Variable):
      leaf = leaf.get_value()
    if isinstance(leaf, jax.core.Tracer):
      raise TypeError(f"thin: {what} {_name(key)!r} is traced; thin needs concrete arrays (the "
                      "kept widths set the shapes), so call it outside jax.jit.")
    if not isinstance(leaf, (jax.Array, np.ndarray)):
      raise TypeError(f"thin: {what} {_name(key)!r} is a {type(leaf).__name__}, not an array.")
    if leaf.shape != own[path].shape:
      raise ValueError(f"thin: {what} do not match the {family} model: {_name(key)!r} has shape "
                       f"{tuple(leaf.shape)}, the model's has {tuple(own[path].shape)}.")
    values[path] = np.asarray(leaf)
  return values


def _rebuild(constructor: Callable[..., nnx.Module], values: dict[Path, np.ndarray]) -> nnx.Module:
  """The model ``constructor`` builds, holding ``values`` (no random init is drawn)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: constructor(rngs=nnx.Rngs(0))))
  flat = nnx.to_flat_state(state)
  for path, var in flat:
    value = values[path]
    if var.get_value().shape != value.shape:  # the family's build and links disagree
      raise AssertionError(f"thin: {_name(path)} built {var.get_value().shape}, has {value.shape}.")
    var.set_value(jnp.asarray(value))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
