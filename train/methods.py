"""The training methods, one builder per ``config.optimizer`` name, looked up in ``METHODS``.

A method says how to build its optimizer from the config and the run's length, and optionally
its logged step size, the advice given when it diverges, and an epoch-end callback (LOBSTER's
prune-on-plateau). The loop knows nothing method-specific. Adding one::

  @register("my_method")
  def _my_method(config, run):
    return optax.chain(...)

Every method may be followed by adaptive sparse retraining (``config.freeze_zeros_epoch``) and
magnitude pruning (``config.pruning``), appended by :func:`create_optimizer`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

import models
import sparse_optax as so

L1_WEIGHTS = ("log", "uniform")
L1_METHODS = ("xrda", "rda", "prox_sgd")  # the methods config.l1 or config.l1_sparsity drives
PRUNINGS = ("none", "once", "gradual")
ACCUMULATOR_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # None: the params' dtype
LR_SCHEDULES = ("cosine", "constant")
AVERAGINGS = ("cosine", "zero", "one")


@dataclasses.dataclass(frozen=True)
class Run:
  """What a method may need to know about the run it is built for."""
  total_steps: int
  steps_per_epoch: int
  input_layer: tuple[Any, ...] = ()  # params path of the model's first layer (RigL keeps it dense)


Builder = Callable[[ml_collections.ConfigDict, Run], optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered training method.

  Attributes:
    build: ``(config, run) -> GradientTransformation``.
    step_size: ``(config, run) -> schedule`` of the step size the loop logs; default the
      config's learning rate with its schedule.
    divergence_advice: ``config -> str``, what to change when the loss becomes NaN.
    callback: ``(config) -> callback`` called by the loop at each epoch's end (see
      ``train.lobster.PruneOnPlateau`` for the protocol), or None.
    needs_validation: the method decides on the validation loss, so the config must name
      a ``validation_split``.
  """
  build: Builder
  step_size: Callable[[ml_collections.ConfigDict, Run], optax.Schedule] | None = None
  divergence_advice: Callable[[ml_collections.ConfigDict], str] | None = None
  callback: Callable[[ml_collections.ConfigDict], Any] | None = None
  needs_validation: bool = False


METHODS: dict[str, Method] = {}


def register(name: str, **fields: Any) -> Callable[[Builder], Builder]:
  """Registers the decorated builder as ``config.optimizer = name``."""
  def decorate(build: Builder) -> Builder:
    if name in METHODS:
      raise ValueError(f"Method {name!r} is already registered.")
    METHODS[name] = Method(build=build, **fields)
    return build
  return decorate


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"Unknown optimizer {name!r} (config.optimizer); valid: "
                     f"{', '.join(sorted(METHODS))}.")
  return METHODS[name]


# --------------------------------------------------------------------------- shared pieces


def learning_rate(config: ml_collections.ConfigDict, run: Run) -> optax.ScalarOrSchedule:
  """``config.lr_schedule`` from ``config.learning_rate``; with ``config.warmup_steps`` W, a
  linear rise from 0 over the first W steps, then the schedule over the steps left."""
  warmup = config.warmup_steps
  if warmup and warmup >= run.total_steps:
    raise ValueError(f"config.warmup_steps ({warmup}) must be below the run's {run.total_steps} "
                     "steps.")
  cosine = config.lr_schedule == "cosine"
  if not warmup:
    return so.cosine_decay(config.learning_rate, run.total_steps) if cosine else (
        config.learning_rate)
  after = (so.cosine_decay(config.learning_rate, run.total_steps - warmup) if cosine
           else optax.constant_schedule(config.learning_rate))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.learning_rate, warmup), after], [warmup])


def _averaging(config: ml_collections.ConfigDict, run: Run) -> optax.ScalarOrSchedule:
  return {"cosine": so.cosine_averaging(run.total_steps), "zero": 0.0, "one": 1.0}[
      config.averaging]


def _sgd(config: ml_collections.ConfigDict, run: Run) -> optax.GradientTransformation:
  """SGD with momentum and coupled weight decay (the dense baseline)."""
  return optax.chain(optax.add_decayed_weights(config.weight_decay),
                     optax.sgd(learning_rate(config, run), momentum=config.momentum or None,
                               nesterov=config.nesterov))


_NORMALIZATION = re.compile(r"(^|_)bn\d*$")  # the models' BatchNorm attributes: bn, bn1, stem_bn


def not_normalization(params: Any) -> Any:
  """Mask: every leaf but BatchNorm scales and shifts (LOBSTER shrinks weights and biases).

  By name, since rank cannot tell a dense bias from a BatchNorm shift.
  """
  def keep(path, _):
    return not any(_NORMALIZATION.search(str(getattr(k, "key", k))) for k in path)
  return jax.tree_util.tree_map_with_path(keep, params)


def l1_target(config: ml_collections.ConfigDict, run: Run) -> dict[str, Any]:
  """The strength arguments of xrda, rda and prox_sgd: ``l1=config.l1``, or a sparsity target
  (and the model's ``mask``, :func:`penalised`).

  ``config.l1_sparsity`` replaces λ by the fraction of zeros wanted: held from
  ``l1_sparsity_begin_epoch``, or ramped to it on Zhu & Gupta's cubic schedule when
  ``l1_sparsity_end_epoch`` is later (then held). ``config.l1`` is not used then.
  """
  if config.l1_sparsity is None:
    return {"l1": config.l1, **penalised(config)}
  begin = config.l1_sparsity_begin_epoch * run.steps_per_epoch
  end = config.l1_sparsity_end_epoch * run.steps_per_epoch
  if end > begin:
    sparsity = so.polynomial_sparsity(config.l1_sparsity, begin, end)
  elif begin == 0:
    sparsity = config.l1_sparsity
  else:
    sparsity = lambda n: jnp.where(n >= begin, config.l1_sparsity, 0.0)  # noqa: E731
  return {"sparsity": sparsity, "scope": config.l1_sparsity_scope,
          "solve_every": config.l1_solve_every or None, **penalised(config),
          **erk_shapes(config.l1_sparsity_scope)}


def attention_as_matrices(params: Any) -> Any:
  """Per leaf, the shape ERK reads it as (``sparse_optax.layer_densities``): an attention
  kernel (``ATTENTION_INPUTS``) as the matrix it is, (fan-in, fan-out), as Evci et al. count a
  dense layer; None (its own shape) for every other leaf."""
  def leaf(path, x):
    # (an nnx.State's paths end in the Variable's .value: not a key of the module tree)
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path
            if not isinstance(k, jax.tree_util.GetAttrKey)]
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 3 or len(keys) < 2 or keys[-2] not in ATTENTION_INPUTS:
      return None
    fan_in = _input_size(shape, ATTENTION_INPUTS[keys[-2]])
    return (fan_in, math.prod(shape) // fan_in)
  return jax.tree_util.tree_map_with_path(leaf, params)


def erk_shapes(scope: str) -> dict[str, Any]:
  """``{"erk_shapes": attention_as_matrices}`` where ``scope`` (or distribution) is ERK."""
  return {"erk_shapes": attention_as_matrices} if scope == "erk" else {}


def penalised(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``{"mask": ...}`` where the model names the leaves an l1 penalty or pruning may zero (the
  Transformers: not their embeddings), else ``{}``: the library's default, ``ndim >= 2``.
  With ``config.nm_pattern``, the leaves the pattern cannot hold (``nm_pattern_axes``: a first
  conv on 1 or 3 channels) are left out too, dense, as NVIDIA's ASP leaves them."""
  mask = models.penalty_mask(config.model)
  if config.get("nm_pattern"):
    axes = nm_pattern_axes(config.nm_pattern, mask)

    def holds_pattern(params):
      return jax.tree.map(lambda _, a: a is not None, params, axes(params))
    mask = holds_pattern
  return {} if mask is None else {"mask": mask}


def _input_size(shape: tuple[int, ...], axes: int | tuple[int, ...]) -> int:
  """A kernel's fan-in: the product of its input ``axes``."""
  return math.prod(shape[a] for a in ((axes,) if isinstance(axes, int) else axes))


NM_EXCLUDED = ("embedding",)  # lookup tables: a row is read, not multiplied, so no pattern
ATTENTION_INPUTS = {"query": 0, "key": 0, "value": 0, "out": (0, 1)}  # nnx.MultiHeadAttention


def nm_pattern_axes(pattern: str, mask: Callable[[Any], Any] | None = None
                    ) -> Callable[[Any], Any]:
  """Per leaf, the input axes of ``pattern`` ("N:M") in the repository's models (Flax layouts):
  axis 0 of a dense kernel (in, out), the I axis of an HWIO conv, axis 0 of an attention
  query/key/value kernel (in, heads, head_dim), axes (0, 1) of its output kernel
  (heads, head_dim, out). A leaf whose input size is not a multiple of M (a first conv on 1 or 3
  channels), an embedding table or a vector gets None: no pattern (dense, as NVIDIA's ASP leaves
  such layers); export checks the pattern under the same rule. Another 3-D leaf in ``mask``
  (default ``ndim >= 2``) is an error: its input axes are unknown."""
  _, m = (int(v) for v in pattern.split(":"))

  def axes(params):
    selected = (jax.tree.map(lambda x: jnp.ndim(x) >= 2, params) if mask is None
                else mask(params))

    def leaf(path, x, sel):
      keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
      shape = tuple(getattr(x, "shape", ()))
      if not sel or len(shape) < 2 or any(k in NM_EXCLUDED for k in keys):
        return None
      if len(shape) == 3:
        parent = keys[-2] if len(keys) >= 2 else ""
        if parent not in ATTENTION_INPUTS:
          raise ValueError(f"config.nm_pattern: leaf {'/'.join(keys)} of shape {shape} is 3-D "
                           "but not an attention kernel (query, key, value, out): its input "
                           "axes are unknown.")
        found = ATTENTION_INPUTS[parent]
      elif len(shape) in (2, 4):
        found = 0 if len(shape) == 2 else 2
      else:
        return None
      return found if _input_size(shape, found) % m == 0 else None
    return jax.tree_util.tree_map_with_path(leaf, params, selected)

  return axes


def nm_pattern(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``{"pattern", "pattern_axes"}`` of ``config.nm_pattern`` ("N:M") for the l1 methods and
  pruning, else ``{}``."""
  if config.nm_pattern is None:
    return {}
  return {"pattern": config.nm_pattern,
          "pattern_axes": nm_pattern_axes(config.nm_pattern, models.penalty_mask(config.model))}


# --------------------------------------------------------------------------- the methods


# config.structure: the library's per-leaf structures, or "groups": the model's attention heads
# and MLP neurons tied across leaves (models.group_structure).
STRUCTURES = (*so.STRUCTURES, "groups")


def structure(config: ml_collections.ConfigDict) -> Any:
  """xrda's ``structure=`` for ``config.structure``."""
  if config.structure != "groups":
    return config.structure
  found = models.group_structure(config.model)
  if found is None:
    raise ValueError(f"config.structure='groups' ties a model's attention heads and MLP neurons "
                     f"across leaves; model {config.model!r} declares none (the Transformers "
                     "do: vit*, lm*).")
  return found


@register("xrda")
def _xrda(config, run):
  """xRDA with momentum and adaptive log-l1 (Siegel, Chen & Xu, 2020); ``l1_weights="uniform"``: plain l1."""
  lr, averaging = learning_rate(config, run), _averaging(config, run)
  if config.l1_weights == "uniform":
    if config.structure != "unstructured":
      raise ValueError("config.l1_weights='uniform' is plain l1, which has no structure; got "
                       f"config.structure={config.structure!r}.")
    return so.xrda(lr, averaging, momentum_timescale=config.momentum_timescale,
                   weight_decay=config.weight_decay, weights=so.uniform_l1_weights(),
                   **l1_target(config, run), **nm_pattern(config))
  return so.xrda(lr, averaging, **l1_target(config, run), **nm_pattern(config),
                 momentum_timescale=config.momentum_timescale,
                 magnitude_timescale=config.magnitude_timescale,
                 maximum_factor=config.maximum_factor,
                 weight_decay=config.weight_decay,
                 structure=structure(config),
                 accumulator_dtype=ACCUMULATOR_DTYPES[config.accumulator_dtype])


@register("rda",
          step_size=lambda config, run: so.rda_step_size(config.rda_gamma),
          divergence_advice=lambda config: (
              f"raise config.rda_gamma (now {config.rda_gamma}): the first step is 1/γ"))
def _rda(config, run):
  """Xiao's RDA around the initial point (He et al., 2020); step 1/(γ√n)."""
  return so.rda(config.rda_gamma, weight_decay=config.weight_decay, **l1_target(config, run),
                **nm_pattern(config))


@register("prox_sgd")
def _prox_sgd(config, run):
  """(Momentum) SGD then soft-thresholding by λ·s."""
  return so.prox_sgd(learning_rate(config, run), **l1_target(config, run), **nm_pattern(config),
                     momentum=config.momentum or None,
                     nesterov=config.nesterov, weight_decay=config.weight_decay)


register("sgd")(_sgd)


def _kernels(params: Any) -> Any:
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


@register("adamw")
def _adamw(config, run):
  """AdamW (Loshchilov & Hutter, 2019), the Transformers' usual dense optimizer: Adam's
  β = (0.9, 0.999) and decoupled weight decay ``config.weight_decay`` (times the step size) on
  the kernels and embeddings, not on biases and norms."""
  return optax.adamw(learning_rate(config, run), weight_decay=config.weight_decay,
                     mask=_kernels)


@register("affine_scaling")
def _affine_scaling(config, run):
  """Re-weighted l1/l2 or FOCUSS (Fedorov & Rao, 2018): SGD on q with θ = q ⊙ ω; with ``affine_greedy``
  q carries over each refresh of ω (the paper's choice), else θ does (SGD preconditioned by ω²)."""
  period = config.affine_period_epochs * run.steps_per_epoch
  sgd = optax.sgd(learning_rate(config, run), momentum=config.momentum or None,
                  nesterov=config.nesterov)
  decay = optax.add_decayed_weights(config.weight_decay)
  if config.affine_greedy:
    return optax.chain(decay, so.affine_scaling(
        sgd, config.affine_method, tau=config.affine_tau, p=config.affine_p, period=period,
        leafwise=config.affine_leafwise, iterations=config.affine_iterations))
  return optax.chain(
      decay,
      so.scale_by_affine_scaling(config.affine_method, tau=config.affine_tau, p=config.affine_p,
                                 period=period),
      sgd)


def _lobster_mask(config) -> Callable[[Any], Any]:
  """What LOBSTER shrinks and prunes: every weight and bias but BatchNorm's, or, where the model
  names its penalised leaves (a Transformer: not its embeddings and LayerNorms), those."""
  return models.penalty_mask(config.model) or not_normalization


def _lobster_callback(config):
  from train import lobster  # pylint: disable=g-import-not-at-top
  return lobster.PruneOnPlateau(config.lobster_patience, config.lobster_tolerance,
                                mask=_lobster_mask(config))  # prunes what the optimizer shrinks


@register("lobster", callback=_lobster_callback, needs_validation=True)
def _lobster(config, run):
  """SGD with LOBSTER's shrinkage (Tartaglione et al., 2020), zeros pinned; the callback prunes on plateaus."""
  mask = _lobster_mask(config)
  return optax.chain(so.lobster(_sgd(config, run), config.lobster_strength, mask=mask),
                     so.freeze_zeros(mask=mask))  # pins what the callback prunes


def _under(prefix: tuple[Any, ...]) -> Callable[[Any], Any]:
  """Mask: the leaves at or below the params path ``prefix`` (none for an empty prefix)."""
  def mask(params):
    def at(path, _):
      keys = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
      return bool(prefix) and keys[:len(prefix)] == tuple(prefix)
    return jax.tree_util.tree_map_with_path(at, params)
  return mask


def _dynamic_sparse(factory):
  def build(config, run):
    """SGD (as the dense baseline) inside a mask of fixed size that moves (Evci et al., 2020)."""
    dense = _under(run.input_layer) if config.dst_distribution == "uniform" else None
    return factory(_sgd(config, run), config.dst_sparsity,
                   update_frequency=config.dst_update_steps,
                   end_step=int(config.dst_end_fraction * run.total_steps),
                   drop_fraction=config.dst_drop_fraction,
                   distribution=config.dst_distribution, dense=dense, seed=config.seed,
                   **penalised(config),  # a Transformer's embeddings stay dense
                   **erk_shapes(config.dst_distribution))
  return build


register("rigl")(_dynamic_sparse(so.rigl))
register("set")(_dynamic_sparse(so.set_))


OPTIMIZERS = tuple(METHODS)


# --------------------------------------------------------------------------- entry points


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                     steps_per_epoch: int) -> optax.GradientTransformation:
  """The whole optimizer from ``config``: the method's, then retraining and pruning.

  ``config.freeze_zeros_epoch`` appends :func:`sparse_optax.freeze_zeros` (adaptive sparse
  retraining: from that epoch on, zero weights stay zero). ``config.pruning`` appends
  :func:`sparse_optax.prune_by_magnitude` (Han et al. / Zhu & Gupta). ``config.nm_pattern``
  ("N:M") is the prox's pattern in xrda, rda and prox_sgd and the pruning's (:func:`nm_pattern`).
  """
  run = Run(total_steps=total_steps, steps_per_epoch=steps_per_epoch,
            input_layer=models.input_layer(config.model))
  tx = get_method(config.optimizer).build(config, run)
  if config.freeze_zeros_epoch is not None:
    tx = optax.chain(tx, so.freeze_zeros(start_step=config.freeze_zeros_epoch * steps_per_epoch))
  if config.pruning != "none":
    begin = config.pruning_begin_epoch * steps_per_epoch
    if config.pruning == "once":
      sparsity, end, frequency = config.pruning_sparsity, begin, 1
    else:
      end = config.pruning_end_epoch * steps_per_epoch
      sparsity = so.polynomial_sparsity(config.pruning_sparsity, begin, end)
      frequency = config.pruning_frequency
    tx = optax.chain(tx, so.prune_by_magnitude(sparsity, begin_step=begin, end_step=end,
                                               frequency=frequency, scope=config.pruning_scope,
                                               **penalised(config), **nm_pattern(config),
                                               **erk_shapes(config.pruning_scope)))
  return tx


def learning_rate_at(config: ml_collections.ConfigDict, step: int, total_steps: int) -> float:
  """The step size of ``step`` (for logging)."""
  method = get_method(config.optimizer)
  run = Run(total_steps=total_steps, steps_per_epoch=0)
  schedule = (method.step_size or learning_rate)(config, run)
  return float(schedule(step)) if callable(schedule) else float(schedule)


def divergence_advice(config: ml_collections.ConfigDict) -> str:
  method = get_method(config.optimizer)
  if method.divergence_advice is not None:
    return method.divergence_advice(config)
  return f"lower config.learning_rate (now {config.learning_rate})"
