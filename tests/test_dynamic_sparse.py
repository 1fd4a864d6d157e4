"""RigL, SET and ERK against a NumPy transcription of Evci et al. (2020)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so

SHAPES = [(3, 3, 1, 6), (3, 3, 6, 16), (256, 120), (120, 10)]


def numpy_erk(shapes, density, dense=()):
  """ERK (Evci et al., 2020): d_l ∝ Σdims/Πdims, scaled to the budget; layers above 1 dense, rest rescaled."""
  sizes = np.array([math.prod(s) for s in shapes], float)
  raw = np.array([sum(s) / math.prod(s) for s in shapes])
  full = np.zeros(len(shapes), bool)
  full[list(dense)] = True
  while True:
    eps = (density * sizes.sum() - sizes[full].sum()) / (sizes[~full] * raw[~full]).sum()
    over = ~full & (eps * raw > 1)
    if not over.any():
      return np.where(full, 1.0, eps * raw)
    full |= over


@pytest.mark.parametrize("density", [0.02, 0.1, 0.3, 0.7])
@pytest.mark.parametrize("dense", [(), (0,)])
def test_erk_densities_equal_the_transcription_and_meet_the_budget(density, dense):
  got = np.array(so.erk_densities(SHAPES, density, [i in dense for i in range(len(SHAPES))]))
  np.testing.assert_allclose(got, numpy_erk(SHAPES, density, dense), rtol=1e-5)
  sizes = np.array([math.prod(s) for s in SHAPES])
  np.testing.assert_allclose((got * sizes).sum(), density * sizes.sum(), rtol=1e-5)
  assert np.all(got <= 1.0)


def test_erk_density_is_traceable():
  got = jax.jit(lambda d: jnp.stack(so.erk_densities(SHAPES, d)))(0.1)
  np.testing.assert_allclose(got, numpy_erk(SHAPES, 0.1), rtol=1e-5)


def _params(seed=0):
  keys = jax.random.split(jax.random.key(seed), len(SHAPES))
  params = {f"l{i}": {"kernel": jax.random.normal(k, s), "bias": jnp.ones(s[-1])}
            for i, (k, s) in enumerate(zip(keys, SHAPES))}
  return params


def _first_dense(params):
  return {name: {"kernel": name == "l0", "bias": False} for name in params}


@pytest.mark.parametrize("factory", [so.rigl, so.set_])
@pytest.mark.parametrize("distribution", so.DISTRIBUTIONS)
def test_active_counts_are_the_layer_densities_and_stay_fixed(factory, distribution):
  params = _params()
  tx = factory(optax.sgd(0.05, momentum=0.9), 0.9, update_frequency=3, end_step=13,
               distribution=distribution, dense=_first_dense)
  state = tx.init(params)
  densities = so.layer_densities(params, 0.9, distribution,
                                 jax.tree.map(lambda x: x.ndim >= 2, params),
                                 _first_dense(params))
  expected = {name: round(float(densities[name]["kernel"]) * params[name]["kernel"].size)
              for name in params}
  if distribution == "uniform":
    assert expected["l0"] == params["l0"]["kernel"].size  # RigL's dense first layer
    assert expected["l2"] == round(0.1 * 256 * 120)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  keep_before = None
  for t in range(18):
    grads = jax.tree.map(lambda x, t=t: jnp.sin(x * (t + 1)), params)
    updates, state = step(params, state, grads)
    params = optax.apply_updates(params, updates)
    keep, host = jax.device_get((state.keep, params))
    for name in params:
      assert int(np.sum(keep[name]["kernel"])) == expected[name], (t, name)
      assert np.all((host[name]["kernel"] != 0) <= keep[name]["kernel"]), (t, name)
      assert np.all(host[name]["bias"] != 0)  # not in the mask
    if t == 13:
      keep_before = state.keep
  # No mask update at or after end_step.
  jax.tree.map(np.testing.assert_array_equal, state.keep, keep_before)


def numpy_regrow(p_after, grad, keep, fraction, grow_scores):
  """RigL / SET (Evci et al., 2020) for one layer: drop the ⌊f·active⌋ smallest |θ| among the active, grow as many
  of the largest scores among the rest (the just dropped included)."""
  p_after, keep = np.asarray(p_after).ravel(), np.asarray(keep).ravel()
  n = int(np.floor(fraction * keep.sum()))
  active = np.flatnonzero(keep)
  dropped = active[np.argsort(np.abs(p_after[active]), kind="stable")[:n]]
  survivors = keep.copy()
  survivors[dropped] = False
  rest = np.flatnonzero(~survivors)
  grown = rest[np.argsort(-np.asarray(grow_scores).ravel()[rest], kind="stable")[:n]]
  new = survivors.copy()
  new[grown] = True
  return new, dropped, grown


def test_rigl_mask_update_equals_the_transcription():
  params = _params(1)
  lr, every, end, alpha = 0.1, 5, 50, 0.3
  tx = so.rigl(optax.sgd(lr), 0.8, update_frequency=every, end_step=end, drop_fraction=alpha)
  state = tx.init(params)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  for t in range(11):
    grads = jax.tree.map(lambda x, t=t: jnp.cos(3.0 * x + t), params)
    old_keep, old_params = state.keep, params
    updates, state = step(params, state, grads)
    params = optax.apply_updates(params, updates)
    if t in (5, 10):  # update steps: t > 0, t % every == 0, t < end
      fraction = alpha / 2 * (1 + np.cos(np.pi * t / end))
      for name in params:
        p, g, m = (np.asarray(x[name]["kernel"]) for x in (old_params, grads, old_keep))
        stepped = p - lr * np.where(m, g, 0)
        new, dropped, grown = numpy_regrow(stepped, g, m, fraction, np.abs(g))
        assert len(dropped) > 0
        np.testing.assert_array_equal(np.asarray(state.keep[name]["kernel"]).ravel(), new)
        after = np.asarray(params[name]["kernel"]).ravel()
        stay = m.ravel() & new
        np.testing.assert_allclose(after[stay], stepped.ravel()[stay], rtol=1e-6)
        assert np.all(after[~stay] == 0)  # dropped and newly grown weights are zero
    elif t > 0:
      jax.tree.map(np.testing.assert_array_equal, state.keep, old_keep)


def test_set_grows_at_random_where_rigl_follows_the_gradient():
  params = _params(2)
  grads = jax.tree.map(lambda x: jnp.where(jnp.arange(x.size).reshape(x.shape) % 7 == 0,
                                           5.0, 0.0), params)
  grown = {}
  for name, factory, seed in (("rigl", so.rigl, 0), ("set0", so.set_, 0), ("set1", so.set_, 1)):
    tx = factory(optax.sgd(0.0), 0.9, update_frequency=1, end_step=10, drop_fraction=0.5,
                 seed=seed)
    update = jax.jit(tx.update)
    state = tx.init(params)
    _, state = update(grads, state, params)  # t = 0: no update
    before = state.keep
    _, state = update(grads, state, params)
    grown[name] = np.asarray(state.keep["l2"]["kernel"] & ~before["l2"]["kernel"])
  big = np.asarray(grads["l2"]["kernel"]) > 0
  assert grown["rigl"].sum() > 100 and np.all(big[grown["rigl"]])
  # SET's picks follow the share of large gradients among the inactive (1 in 7), not the gradient.
  share = big[grown["set0"]].mean()
  assert 0.05 < share < 0.3, share
  assert not np.array_equal(grown["set0"], grown["set1"])


def test_uniform_keeps_the_dense_leaves_dense_and_erk_counts_them_against_the_budget():
  params = _params()
  selected = jax.tree.map(lambda x: x.ndim >= 2, params)
  uniform = so.layer_densities(params, 0.9, "uniform", selected, _first_dense(params))
  assert float(uniform["l0"]["kernel"]) == 1.0 and float(uniform["l1"]["kernel"]) == \
      pytest.approx(0.1)
  assert float(uniform["l0"]["bias"]) == 1.0
  erk = so.layer_densities(params, 0.9, "erk", selected, _first_dense(params))
  np.testing.assert_allclose([float(erk[f"l{i}"]["kernel"]) for i in range(4)],
                             numpy_erk(SHAPES, 0.1, dense=(0,)), rtol=1e-5)


def test_gradual_pruning_with_erk_reaches_the_erk_layer_sparsities():
  params = _params(3)
  tx = so.prune_by_magnitude(so.polynomial_sparsity(0.9, 0, 20), end_step=20, frequency=4,
                             scope="erk")
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(21):
    updates, state = update(jax.tree.map(jnp.zeros_like, params), state, params)
    params = optax.apply_updates(params, updates)
  want = numpy_erk(SHAPES, 0.1)
  for i, shape in enumerate(SHAPES):
    kept = int(np.sum(np.asarray(params[f"l{i}"]["kernel"]) != 0))
    assert kept == math.prod(shape) - math.floor((1 - want[i]) * math.prod(shape)), i


# An attention block as Flax stores it: query (in, heads, head_dim), out (heads, head_dim, out),
# and an MLP matrix; ERK reads the attention kernels as the (fan-in, fan-out) matrices they are.
ATTENTION = {"query": (32, 4, 8), "out": (4, 8, 32), "mlp": (32, 128)}
AS_MATRICES = {"query": (32, 32), "out": (32, 32), "mlp": None}


def _attention(seed=0):
  keys = jax.random.split(jax.random.key(seed), len(ATTENTION))
  return {k: jax.random.normal(key, s) for key, (k, s) in zip(keys, ATTENTION.items())}


def test_erk_reads_each_leaf_as_its_erk_shape():
  params = _attention()
  selected = jax.tree.map(lambda _: True, params)
  views = [AS_MATRICES[k] or ATTENTION[k] for k in params]
  got = so.layer_densities(params, 0.9, "erk", selected, erk_shapes=AS_MATRICES)
  np.testing.assert_allclose([float(got[k]) for k in params], numpy_erk(views, 0.1), rtol=1e-5)
  own = so.layer_densities(params, 0.9, "erk", selected)  # three dimensions: a sparser query
  np.testing.assert_allclose([float(own[k]) for k in params],
                             numpy_erk(list(ATTENTION.values()), 0.1), rtol=1e-5)
  assert float(got["query"]) > 1.2 * float(own["query"])
  callable_view = so.layer_densities(params, 0.9, "erk", selected,
                                     erk_shapes=lambda p: AS_MATRICES)
  assert all(float(callable_view[k]) == float(got[k]) for k in params)


def test_pruning_and_rigl_with_erk_shapes_keep_what_the_matrices_would():
  params = _attention(1)
  flat = {k: v.reshape(AS_MATRICES[k] or v.shape) for k, v in params.items()}
  want = numpy_erk([AS_MATRICES[k] or ATTENTION[k] for k in params], 0.1)

  def pruned(tree, **kwargs):
    tx = so.prune_by_magnitude(0.9, scope="erk", **kwargs)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, tree), tx.init(tree), tree)
    return optax.apply_updates(tree, updates)

  viewed, reshaped = pruned(params, erk_shapes=AS_MATRICES), pruned(flat)
  for i, k in enumerate(params):  # the same weights survive as in the reshaped matrices
    np.testing.assert_array_equal(np.asarray(viewed[k]).reshape(-1),
                                  np.asarray(reshaped[k]).reshape(-1))
    size = params[k].size
    assert int(jnp.count_nonzero(viewed[k])) == size - math.floor((1 - want[i]) * size), k
  tx = so.rigl(optax.sgd(0.1), 0.9, end_step=10, distribution="erk", erk_shapes=AS_MATRICES)
  keep = tx.init(params).keep
  for i, k in enumerate(params):
    assert int(keep[k].sum()) == round(want[i] * params[k].size), k


def _as_matrices(params):
  """AS_MATRICES by mapping over the params, as a user would: None nodes stay None."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: AS_MATRICES.get(path[0].key), params)


def test_erk_shapes_under_masked_none_leaves_and_inject_hyperparams():
  params = _attention(2)

  def run(tx, tree):
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, tree), tx.init(tree), tree)
    return optax.apply_updates(tree, updates)

  plain = run(so.prune_by_magnitude(0.9, scope="erk", erk_shapes=AS_MATRICES), params)
  # A bias outside optax.masked's mask (a MaskedNode inside) and a None leaf are skipped alike.
  with_bias = dict(params, bias=jnp.ones(32), empty=None)
  masked = optax.masked(so.prune_by_magnitude(0.9, scope="erk", erk_shapes=_as_matrices),
                        lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
  got = run(masked, with_bias)
  injected = run(optax.inject_hyperparams(so.prune_by_magnitude, static_args=("erk_shapes",))(
      0.9, scope="erk", erk_shapes=_as_matrices), params)
  for k in params:
    np.testing.assert_array_equal(got[k], plain[k])
    np.testing.assert_array_equal(injected[k], plain[k])
  # Not named static: the callable is taken for a schedule and called on the step count.
  with pytest.raises((ValueError, TypeError), match="static_args"):
    run(optax.inject_hyperparams(so.prune_by_magnitude)(
        0.9, scope="erk", erk_shapes=lambda p: jax.tree.map(jnp.shape, p)), params)


@pytest.mark.parametrize("build, match", [
    (lambda: so.prune_by_magnitude(0.5, erk_shapes=AS_MATRICES), 'only scope="erk"'),
    (lambda: so.rigl(optax.sgd(0.1), 0.5, end_step=5, erk_shapes=AS_MATRICES),
     'only distribution="erk"'),
    (lambda: so.soft_threshold(0.1, erk_shapes=AS_MATRICES),
     'only a sparsity target with scope="erk"'),
    (lambda: so.xrda(0.1, 0.5, sparsity=0.5, momentum_timescale=9.5, erk_shapes=AS_MATRICES),
     'only a sparsity target with scope="erk"'),
])
def test_erk_shapes_where_nothing_reads_them_is_an_error(build, match):
  with pytest.raises(ValueError, match=match):
    build()


@pytest.mark.parametrize("shapes, match", [
    (dict(AS_MATRICES, query=(32, 31)), r"leaf 'query' of shape \(32, 4, 8\) the shape \(32, 31\)"),
    ({"query": (32, 32)}, "the params' structure"),
    (dict(AS_MATRICES, mlp=[32, 128]), "the params' structure"),
])
def test_erk_shapes_of_another_size_or_structure_are_refused_at_init(shapes, match):
  params = _attention()
  tx = so.prune_by_magnitude(0.5, scope="erk", erk_shapes=shapes)
  with pytest.raises(ValueError, match=match):
    tx.init(params)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sparsity=1.5), ValueError, "sparsity"),
    (dict(sparsity="0.9"), TypeError, "sparsity"),
    (dict(update_frequency=0), ValueError, "update_frequency"),
    (dict(end_step=2.5), TypeError, "end_step"),
    (dict(drop_fraction=-0.1), ValueError, "drop_fraction"),
    (dict(distribution="erdos"), ValueError, "distribution"),
])
@pytest.mark.parametrize("factory", [so.rigl, so.set_])
def test_bad_hyperparameters_are_named(factory, kwargs, error, match):
  args = dict(sparsity=0.9, end_step=100) | kwargs
  with pytest.raises(error, match=match):
    factory(optax.sgd(0.1), **args)


def test_integer_params_are_refused():
  tx = so.rigl(optax.sgd(0.1), 0.5, end_step=10)
  with pytest.raises(TypeError, match="float"):
    tx.init({"w": jnp.ones((3, 3), jnp.int32)})


@pytest.mark.parametrize("inner", [optax.sgd(0.1, momentum=0.9), optax.adam(0.01)],
                         ids=["momentum", "adam"])
def test_a_grown_weight_restarts_its_optimizer_state(inner):
  # Every step moves almost all active weights (update_frequency 1, drop fraction 1), so
  # weights dropped at one update are grown back at a later one, with stale moments to reset.
  params = _params(2)
  tx = so.rigl(inner, 0.5, update_frequency=1, end_step=1000, drop_fraction=1.0)
  state = tx.init(params)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  was_active = jax.tree.map(np.asarray, state.keep)
  regrown = 0
  for t in range(8):
    grads = jax.tree.map(lambda x, t=t: jnp.sin(5.0 * x + t) + 0.1, params)
    old_keep = state.keep
    updates, state = step(params, state, grads)
    params = optax.apply_updates(params, updates)
    grown = jax.tree.map(lambda old, new: np.asarray(new & ~old), old_keep, state.keep)
    # the params-shaped parts of the inner state: sgd's trace, adam's mu and nu
    moments = [x for x in jax.tree.leaves(state.inner, is_leaf=lambda x: isinstance(
        x, dict) and x.keys() == params.keys()) if isinstance(x, dict)]
    assert moments
    for moment in moments:
      for g, v in zip(jax.tree.leaves(grown), jax.tree.leaves(moment)):
        assert np.all(np.asarray(v)[g] == 0)
    regrown += sum(int((g & a).sum()) for g, a in zip(jax.tree.leaves(grown),
                                                      jax.tree.leaves(was_active)))
    was_active = jax.tree.map(lambda a, k: a | np.asarray(k), was_active, state.keep)
  assert regrown > 0  # weights active before, dropped, then grown again
