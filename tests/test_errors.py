"""Bad input gets a clear error naming the problem; NaN gradients are detectable."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so

KW = dict(learning_rate=0.1, averaging=0.5, l1=1e-3, momentum_timescale=1.0)
PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


@pytest.mark.parametrize("tx", [
    so.xrda(**KW), so.rda(1.0, 1e-3), so.prox_sgd(0.1, 1e-3),
    so.dual_averaging(0.5), so.soft_threshold(0.1), so.freeze_zeros(),
], ids=["xrda", "rda", "prox_sgd", "dual_averaging", "soft_threshold", "freeze_zeros"])
def test_missing_params(tx):
  state = tx.init(PARAMS)
  # optax's own add_decayed_weights speaks first in the aliases; both name the params
  with pytest.raises(ValueError, match="needs the current params|not passing `params`"):
    tx.update(PARAMS, state)


@pytest.mark.parametrize("name,bad,match", [
    ("l1", -1.0, "l1 must be non-negative"),
    ("l1", math.nan, "l1 must not be NaN"),
    ("learning_rate", -0.1, "learning_rate must be non-negative"),
    ("learning_rate", jnp.nan, "learning_rate must not be NaN"),
    ("momentum_timescale", 0.0, "timescale must be positive"),
    ("momentum_timescale", -2.0, "timescale must be positive"),
    ("magnitude_timescale", math.nan, "timescale must not be NaN"),
    ("averaging", 1.5, r"averaging must lie in \[0, 1\]"),
    ("averaging", -0.1, "averaging must be non-negative"),
    ("weight_decay", -5e-4, "weight_decay must be non-negative"),
    ("maximum_factor", 0.5, "maximum_factor must be >= 1"),
    ("beta", 0.0, "beta must be positive"),
    ("l1", "big", "l1 must be a number"),
    ("learning_rate", "0.1", "learning_rate must be a number"),  # would convert silently
    ("l1", True, "l1 must be a number"),  # would count as 1
    ("l1", np.bool_(False), "l1 must be a number"),
    ("l1", math.inf, "l1 must be finite"),
    ("maximum_factor", math.inf, "maximum_factor must be finite"),
    ("momentum_timescale", math.inf, "timescale must be finite"),
    ("magnitude_timescale", jnp.inf, "timescale must be finite"),
    ("learning_rate", jnp.array([0.1, jnp.inf]), "learning_rate must be finite"),
])
def test_bad_hyperparameters(name, bad, match):
  with pytest.raises((ValueError, TypeError), match=match):
    so.xrda(**{**KW, name: bad})


@pytest.mark.parametrize("factory,kwargs,match", [
    (so.polynomial_sparsity, dict(final_sparsity=1.5, begin_step=0, end_step=5),
     r"final_sparsity must lie in \[0, 1\]"),
    (so.polynomial_sparsity, dict(final_sparsity=0.5, begin_step=-1, end_step=5),
     "need 0 <= begin_step < end_step"),
    (so.scale_by_affine_scaling, dict(method="l1", period=0), "period must be an int >= 1"),
    (so.scale_by_affine_scaling, dict(method="l1", tau=math.inf), "tau must be finite"),
    (so.affine_scaling, dict(inner=optax.sgd(0.1), iterations=-1),
     "iterations must be an int >= 0"),
    (so.affine_scaling, dict(inner=optax.sgd(0.1), method="l3"), "method must be one of"),
    (so.soft_threshold, dict(threshold="0.1"), "threshold must be a number"),
    (so.lobster, dict(inner=optax.sgd(0.1), strength=True), "strength must be a number"),
])
def test_bad_hyperparameters_of_the_other_transforms(factory, kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    factory(**kwargs)


NON_FLOAT = {"w": jnp.ones((2, 3)), "steps": jnp.zeros((2, 2), jnp.int32)}


@pytest.mark.parametrize("tx", [
    so.xrda(**KW), so.rda(1.0, 1e-3), so.prox_sgd(0.1, 1e-3), so.dual_averaging(0.5),
    so.soft_threshold(0.1), so.freeze_zeros(), so.prune_by_magnitude(0.5),
    so.scale_by_affine_scaling("l1"), so.affine_scaling(optax.sgd(0.1)),
    so.lobster(optax.sgd(0.1), 1e-4), so.scale_by_timescale_momentum(0.1, 1.0),
], ids=["xrda", "rda", "prox_sgd", "dual_averaging", "soft_threshold", "freeze_zeros",
        "prune_by_magnitude", "affine_scaling", "affine_scaling_greedy", "lobster",
        "timescale_momentum"])
def test_non_float_params_are_refused_at_init_naming_the_leaf(tx):
  # xrda used to train an int leaf to all zeros without a word.
  with pytest.raises(TypeError, match=r"params leaf \['steps'\] has dtype int32"):
    tx.init(NON_FLOAT)
  tx.init({"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.float16)})  # floats pass


def test_beta_and_maximum_factor_both_given():
  with pytest.raises(ValueError, match="either beta or maximum_factor, not both"):
    so.xrda(**KW, beta=0.002, maximum_factor=500.0)


def test_unknown_structure():
  with pytest.raises(ValueError, match="structure must be one of"):
    so.xrda(**KW, structure="filter")


def test_bad_schedules_and_center():
  with pytest.raises(ValueError, match="total_steps must be positive"):
    so.cosine_averaging(0)
  with pytest.raises(TypeError, match="total_steps must be an int"):
    so.cosine_decay(1.0, 10.5)
  with pytest.raises(ValueError, match="gamma must be positive"):
    so.rda(0.0, 1e-3)
  with pytest.raises(ValueError, match="center must be one of"):
    so.dual_averaging(0.5, center="origin")


# prox_sgd without momentum keeps no per-leaf state: any tree fits its state.
@pytest.mark.parametrize("tx", [so.xrda(**KW), so.xrda(**KW, structure="kernel"),
                                so.rda(1.0, 1e-3)], ids=["xrda", "xrda_kernel", "rda"])
def test_trees_that_do_not_match_the_state(tx):
  state = tx.init(PARAMS)
  other = {"w": jnp.ones((2, 3)), "c": jnp.zeros(3)}
  with pytest.raises(ValueError, match="do not match the tree the state was initialised with"):
    tx.update(other, state, other)


@pytest.mark.parametrize("tx", [so.xrda(**KW), so.rda(1.0, 1e-3)], ids=["xrda", "rda"])
def test_leaf_shapes_that_do_not_match_the_state(tx):
  state = tx.init(PARAMS)
  wrong_shape = {"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}
  with pytest.raises(ValueError, match=r"\['w'\] has shape \(3, 2\)"):
    tx.update(wrong_shape, state, wrong_shape)


def test_nan_gradient_poisons_params_unless_guarded_by_apply_if_finite():
  """Documented behaviour: a NaN gradient propagates into v, z and the params (as in optax.sgd);
  optax.apply_if_finite skips the step and counts it."""
  grads = {"w": jnp.full((2, 3), jnp.nan), "b": jnp.zeros(3)}
  tx = so.xrda(**KW)
  u, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert np.isnan(np.asarray(optax.apply_updates(PARAMS, u)["w"])).all()

  safe = optax.apply_if_finite(so.xrda(**KW), max_consecutive_errors=3)
  state = safe.init(PARAMS)
  step = jax.jit(safe.update)
  u, state = step(grads, state, PARAMS)
  assert not bool(state.last_finite) and int(state.notfinite_count) == 1
  np.testing.assert_array_equal(optax.apply_updates(PARAMS, u)["w"], PARAMS["w"])
  good = {"w": jnp.full((2, 3), 0.5), "b": jnp.zeros(3)}
  u, state = step(good, state, PARAMS)
  assert bool(state.last_finite)
  assert np.all(np.isfinite(np.asarray(optax.apply_updates(PARAMS, u)["w"])))


# Each error names the public factory whose transform raised it: the name is the factory's own,
# set while it and its init/update run (under jit too), never typed by hand at the check.
NAMED = [
    ("dual_averaging", lambda: so.dual_averaging(0.5)),
    ("soft_threshold", lambda: so.soft_threshold(0.1)),
    ("freeze_zeros", lambda: so.freeze_zeros()),
    ("prune_by_magnitude", lambda: so.prune_by_magnitude(0.5)),
    ("scale_by_affine_scaling", lambda: so.scale_by_affine_scaling("l1")),
    ("affine_scaling", lambda: so.affine_scaling(optax.sgd(0.1))),
    ("lobster", lambda: so.lobster(optax.sgd(0.1), 1e-4)),
    ("scale_by_timescale_momentum", lambda: so.scale_by_timescale_momentum(0.1, 1.0)),
    ("rigl", lambda: so.rigl(optax.sgd(0.1), 0.5, end_step=10)),
    ("set_", lambda: so.set_(optax.sgd(0.1), 0.5, end_step=10)),
    ("uniform_l1_weights", lambda: so.uniform_l1_weights()),
    ("log_l1_weights", lambda: so.log_l1_weights(0.1, 1.0)),
    ("accumulated_threshold", lambda: so.accumulated_threshold(0.1, 0.1)),
    # Inside a named optimizer, the primitive that holds the state speaks.
    ("dual_averaging", lambda: so.rda(1.0, 1e-3)),
    ("soft_threshold", lambda: so.prox_sgd(0.1, 1e-3)),
]


@pytest.mark.parametrize("name,make", NAMED, ids=[f"{i}_{n}" for i, (n, _) in enumerate(NAMED)])
def test_errors_name_the_factory_under_jit(name, make):
  with pytest.raises(TypeError, match=rf"^{name}: params leaf \['steps'\] has dtype int32"):
    jax.jit(make().init)(NON_FLOAT)


def test_errors_name_the_factory_inside_optax_wrappers():
  injected = optax.inject_hyperparams(so.prune_by_magnitude)(sparsity=0.5)
  state = injected.init(PARAMS)
  with pytest.raises(ValueError, match="^prune_by_magnitude needs the current params"):
    jax.jit(injected.update)(PARAMS, state)
  multi = optax.multi_transform({"a": so.freeze_zeros(), "b": optax.sgd(0.1)},
                                {"w": "a", "b": "b"})
  state = multi.init(PARAMS)
  wrong = {"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}
  with pytest.raises(ValueError, match=r"^freeze_zeros: params leaf \['w'\] has shape"):
    jax.jit(multi.update)(wrong, state, wrong)
  chained = optax.chain(optax.sgd(0.1), so.soft_threshold(0.1))
  with pytest.raises(ValueError, match="^soft_threshold: updates do not match"):
    chained.update({"w": PARAMS["w"]}, chained.init(PARAMS), PARAMS)


def test_a_nested_transform_names_itself_and_hands_the_name_back():
  kernels = {"k": jnp.ones((3, 3, 2, 4))}
  weights = so.log_l1_weights(0.1, 1.0, structure="kernel", mask=lambda p: {"k": True})
  tx = so.soft_threshold(so.accumulated_threshold(0.1, 0.1, weights=weights))
  state = tx.init(kernels)
  wider = {"k": jnp.ones((3, 3, 2, 5))}
  # soft_threshold runs accumulated_threshold, which runs log_l1_weights: the innermost raised.
  with pytest.raises(ValueError, match="^log_l1_weights: params do not match the tree"):
    jax.jit(tx.update)(wider, state, wider)
  with pytest.raises(ValueError, match="^soft_threshold needs the current params"):
    tx.update(kernels, state)
  # At construction, a named optimizer's own checks name it, its primitives' theirs.
  with pytest.raises(ValueError, match="^rda: scope says how a sparsity target"):
    so.rda(1.0, 1e-3, scope="layer")
  with pytest.raises(ValueError, match="^soft_threshold: initial_l1 starts"):
    so.soft_threshold(0.1, initial_l1=1.0)
  with pytest.raises(ValueError, match="^set_: distribution must be one of"):
    so.set_(optax.sgd(0.1), 0.5, end_step=10, distribution="erdos")


def test_the_name_is_the_decorated_function_s_own_and_does_not_outlive_it():
  from sparse_optax import _checks

  @_checks.names_errors
  def copied_factory():
    def init_fn(params):
      _checks.check_float_params(params)
      return optax.EmptyState()
    return optax.GradientTransformation(init_fn, lambda updates, state, params=None: (
        updates, state))

  with pytest.raises(TypeError, match=r"^copied_factory: params leaf \['steps'\]"):
    jax.jit(copied_factory().init)(NON_FLOAT)
  assert _checks.caller() == "sparse_optax"  # reset though the check raised
