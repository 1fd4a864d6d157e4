"""sparse_optax inside ordinary Optax code: inject_hyperparams with defaults, empty and
partial trees, optax.masked / multi_transform, optax.tree.map_params, and the ``mask``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so
from tests.optimizer_table import TRANSFORM_IDS, TRANSFORMS

PARAMS = {"conv": jnp.linspace(-1.0, 1.0, 3 * 3 * 2 * 4).reshape(3, 3, 2, 4),
          "dense": jnp.linspace(-0.5, 0.8, 12).reshape(4, 3),
          "bias": jnp.linspace(0.0, 0.3, 3)}
XRDA = dict(learning_rate=0.1, averaging=0.5, l1=1e-2, momentum_timescale=1.0)

# Every public GradientTransformation factory (the common table), called alone.
FACTORIES = [(case.name, case.factory, (), case.make(case.strength or 0.0))
             for case in TRANSFORMS]
IDS = TRANSFORM_IDS


def _run(tx, params, steps=3):
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(steps):
    updates, state = update(jax.tree.map(lambda x: 0.1 * jnp.cos(3.0 * x), params), state,
                            params)
    params = optax.apply_updates(params, updates)
  return params, state


def _empty_group_trees():
  labels = {"conv": "dense", "dense": "dense", "bias": "dense"}  # no leaf is "sparse"
  return labels


@pytest.mark.parametrize("name,factory,args,kwargs", FACTORIES, ids=IDS)
def test_empty_trees_none_leaves_and_empty_groups(name, factory, args, kwargs):
  del name
  tx = factory(*args, **kwargs)
  for params in ({}, {"a": None, "b": {}}):
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(params, state, params)
    assert updates == params
  with_none = {**PARAMS, "frozen": None}
  out, _ = _run(tx, with_none)
  assert out["frozen"] is None and out["dense"].shape == (4, 3)
  # optax.masked with nothing selected, and a multi_transform group with no leaves.
  masked = optax.masked(factory(*args, **kwargs), jax.tree.map(lambda _: False, PARAMS))
  out, _ = _run(masked, PARAMS)
  passed_through, _ = _run(optax.identity(), PARAMS)  # masked out: the raw updates pass
  jax.tree.map(np.testing.assert_array_equal, out, passed_through)
  multi = optax.multi_transform({"sparse": factory(*args, **kwargs), "dense": optax.sgd(0.1)},
                                _empty_group_trees())
  expected, _ = _run(optax.sgd(0.1), PARAMS)
  out, _ = _run(multi, PARAMS)
  jax.tree.map(np.testing.assert_array_equal, out, expected)


@pytest.mark.parametrize("name,factory,args,kwargs", FACTORIES, ids=IDS)
def test_map_params_gives_every_mapped_state_leaf_its_params_shape(name, factory, args, kwargs):
  """As pod code does: shardings built from each param's shape, applied to the state."""
  del name
  tx = factory(*args, **kwargs)
  state = tx.init(PARAMS)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))  # any jax version
  shardings = jax.tree.map(
      lambda p: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*[None] * p.ndim)),
      PARAMS)
  mismatched = []

  def place(leaf, param, sharding):
    if jnp.shape(leaf) != param.shape:
      mismatched.append((jnp.shape(leaf), param.shape))
    return sharding

  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  specs = optax.tree.map_params(tx, place, state, PARAMS, shardings,
                                transform_non_params=lambda _: replicated)
  assert not mismatched
  placed = jax.device_put(state, specs)  # every sharding fits its leaf
  jax.tree.map(np.testing.assert_array_equal, placed, state)


def test_map_params_shards_the_param_sized_xrda_buffers():
  tx = so.xrda(**XRDA)
  state = tx.init(PARAMS)
  marked = optax.tree.map_params(tx, lambda _: "param", state,
                                 transform_non_params=lambda _: "other")
  kinds = [k for k in jax.tree.leaves(marked) if k == "param"]
  assert len(kinds) == 4 * len(PARAMS)  # v, z, r and B, each like the params


# ----------------------------------------------------------------------------- mask


def _no_dense(params):
  return {k: k != "dense" and v.ndim >= 2 for k, v in params.items()}


@pytest.mark.parametrize("mask", [_no_dense, {"conv": True, "dense": False, "bias": False}],
                         ids=["callable", "tree"])
@pytest.mark.parametrize("make", [
    lambda mask: so.xrda(**dict(XRDA, l1=5.0), mask=mask),
    lambda mask: so.xrda(**dict(XRDA, l1=5.0, structure="channel"), mask=mask),
    lambda mask: so.rda(1.0, 5.0, mask=mask),
    lambda mask: so.prox_sgd(0.1, 50.0, mask=mask),
], ids=["xrda", "xrda_channel", "rda", "prox_sgd"])
def test_mask_keeps_a_leaf_out_of_the_l1_penalty(make, mask):
  out, _ = _run(make(mask), PARAMS, steps=5)
  assert np.all(np.asarray(out["conv"]) == 0)  # a huge l1 zeroes what it reaches
  assert np.count_nonzero(out["dense"]) == 12 and np.count_nonzero(out["bias"]) >= 2
  unmasked, _ = _run(make(None), PARAMS, steps=5)
  assert np.all(np.asarray(unmasked["dense"]) == 0)  # by default the dense kernel is reached


def test_mask_never_turns_off_weight_decay():
  tx = so.xrda(**dict(XRDA, l1=0.0, averaging=0.0, momentum_timescale=1e-9), weight_decay=0.5,
               mask=lambda p: jax.tree.map(lambda _: False, p))
  params = {"w": jnp.ones((2, 2))}
  updates, _ = tx.update({"w": jnp.zeros((2, 2))}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-5)


@pytest.mark.parametrize("make,attr", [
    (lambda mask: optax.chain(optax.sgd(1.0), so.freeze_zeros(mask=mask)), None),
    (lambda mask: optax.chain(optax.sgd(1.0), so.prune_by_magnitude(0.5, mask=mask)), None),
], ids=["freeze_zeros", "prune_by_magnitude"])
def test_mask_selects_pinned_and_pruned_leaves(make, attr):
  del attr
  params = {"a": jnp.array([[0.0, 1.0, 2.0, 3.0]]), "b": jnp.array([[0.0, 1.0, 2.0, 3.0]])}
  grads = {"a": -jnp.ones((1, 4)), "b": -jnp.ones((1, 4))}
  tx = make({"a": True, "b": False})
  updates, _ = tx.update(grads, tx.init(params), params)
  out = optax.apply_updates(params, updates)
  assert float(out["a"][0, 0]) == 0.0  # pinned or pruned
  assert float(out["b"][0, 0]) != 0.0  # left alone


def test_lobster_mask_leaves_normalisation_alone():
  params = {"kernel": jnp.full((2, 2), 2.0), "bn_scale": jnp.full((2,), 2.0)}
  tx = so.lobster(optax.sgd(0.0), 0.5, mask={"kernel": True, "bn_scale": False})
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  out = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(out["kernel"], np.ones((2, 2)))
  np.testing.assert_array_equal(out["bn_scale"], np.full((2,), 2.0))


def test_mask_prefix_and_bad_masks():
  tx = so.prox_sgd(0.1, 50.0, mask={"conv": True, "dense": False, "bias": False})
  nested = {"block": {"w": PARAMS["dense"], "v": PARAMS["dense"]}, "head": PARAMS["dense"]}
  prefix, _ = _run(so.prox_sgd(0.1, 50.0, mask={"block": True, "head": False}), nested)
  assert np.all(np.asarray(prefix["block"]["w"]) == 0) and np.all(prefix["head"] != 0)
  single, _ = _run(so.prox_sgd(0.1, 50.0, mask=True), PARAMS["dense"])  # one array: one bool
  assert np.all(np.asarray(single) == 0)
  with pytest.raises(TypeError, match="mask is a single bool .* for a tree of params"):
    so.prox_sgd(0.1, 50.0, mask=False).init(PARAMS)
  with pytest.raises(ValueError, match="mask does not match the params tree"):
    tx.init({"other": jnp.ones((2, 2))})
  traced = so.soft_threshold(0.1, mask=lambda p: jax.tree.map(lambda x: jnp.ndim(x) >= 2, p))
  tx_bad = so.soft_threshold(0.1, mask={"w": jnp.asarray(True)})
  tx_bad.init({"w": jnp.ones((2, 2))})  # a concrete array bool is fine
  with pytest.raises(TypeError, match=r"mask leaf \['w'\] is .*Python bools"):
    jax.jit(lambda m: so.soft_threshold(0.1, mask={"w": m}).init({"w": jnp.ones((2, 2))}))(
        jnp.asarray(True))
  del traced


def test_xrda_weights_argument():
  uniform, _ = _run(so.xrda(**XRDA, weights=so.uniform_l1_weights()), PARAMS)
  by_hand, _ = _run(optax.chain(
      optax.add_decayed_weights(0.0),
      so.scale_by_timescale_momentum(0.1, 1.0),
      optax.scale_by_learning_rate(0.1),
      so.dual_averaging(0.5),
      so.soft_threshold(so.accumulated_threshold(1e-2, 0.1, 0.5))), PARAMS)
  jax.tree.map(np.testing.assert_array_equal, uniform, by_hand)
  for extra in (dict(structure="kernel"), dict(maximum_factor=10.0), dict(beta=0.1),
                dict(magnitude_timescale=2.0)):
    with pytest.raises(ValueError, match=f"{next(iter(extra))} configure the log-l1 weighting"):
      so.xrda(**XRDA, weights=so.uniform_l1_weights(), **extra)


def test_inject_hyperparams_with_a_callable_mask_and_a_dtype():
  kwargs = dict(XRDA, mask=_no_dense, accumulator_dtype=jnp.bfloat16)
  plain, _ = _run(so.xrda(**kwargs), PARAMS)
  injected, _ = _run(optax.inject_hyperparams(so.xrda, static_args=("mask", "accumulator_dtype"))(
      **kwargs), PARAMS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               injected, plain)
  # A mask callable that takes any tree is evaluated on the step count: refused by the first
  # update, before any step is taken with it.
  by_rank = dict(kwargs, mask=lambda p: jax.tree.map(lambda x: jnp.ndim(x) >= 2, p))
  with pytest.raises(TypeError, match=r"static_args=\('mask',\)"):
    _run(optax.inject_hyperparams(so.xrda, static_args=("accumulator_dtype",))(**by_rank), PARAMS)
  with pytest.raises(TypeError, match=r"static_args=\('accumulator_dtype',\)"):
    optax.inject_hyperparams(so.xrda, static_args=("mask",))(**kwargs).init(PARAMS)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_accumulator_dtype_stores_v_and_r_only(dtype):
  tx = so.xrda(**XRDA, accumulator_dtype=dtype)
  _, state = _run(tx, PARAMS)
  velocity, z, r, b = state[1].velocity, state[3].z, state[4].threshold.weights.magnitude, \
      state[4].threshold.accumulated
  assert {x.dtype for x in jax.tree.leaves(velocity) + jax.tree.leaves(r)} == {jnp.dtype(dtype)}
  assert {x.dtype for x in jax.tree.leaves(z) + jax.tree.leaves(b)} == {jnp.dtype(jnp.float32)}
  with pytest.raises(TypeError, match="accumulator_dtype must be a dtype"):
    so.xrda(**XRDA, accumulator_dtype="wide")


def test_bf16_accumulators_stay_close_to_f32_on_a_short_run():
  f32, _ = _run(so.xrda(**XRDA), PARAMS, steps=20)
  bf16, _ = _run(so.xrda(**XRDA, accumulator_dtype=jnp.bfloat16), PARAMS, steps=20)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-2), bf16, f32)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(bf16), jax.tree.leaves(f32)))
