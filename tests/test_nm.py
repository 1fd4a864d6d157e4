"""N:M sparsity: the mask and the prox against a NumPy transcription (ties, every layout), the
pattern after every step of the l1 methods and of pruning, a sparsity target on top of a
pattern, the optax checks, sharded == replicated, the compressed form, and bad inputs (the
loop and export: tests/test_nm_loop.py)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so
from tests import xla_flags
from tests.test_optimizers_common import _find, _step

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (shape, spec, input axes): every layout the pattern reads.
LAYOUTS = [
    ((8, 3), None, (0,)),  # dense (in, out)
    ((3, 3, 8, 5), "HWIO", (2,)),  # 2-D conv, Flax
    ((5, 8, 3, 3), "OIHW", (1,)),  # 2-D conv, PyTorch
    ((12, 2, 3), 0, (0,)),  # attention q/k/v (in, heads, head_dim)
    ((2, 4, 6), (0, 1), (0, 1)),  # attention output (heads, head_dim, out)
    ((3, 8, 2), 1, (1,)),  # 1-D conv (W, I, O)
]


# ---------------------------------------------------------------------------------------------
# NumPy transcription: move the input axes last, flatten them, cut into groups of M, and in each
# group keep the N largest scores, ties to the lower index (a stable sort of -score).


def _np_groups(x, axes, m):
  moved = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim))
  front = moved.shape[:x.ndim - len(axes)]
  return moved.reshape(*front, -1, m), moved.shape


def _np_ungroup(g, moved_shape, axes, ndim):
  return np.moveaxis(g.reshape(moved_shape), range(ndim - len(axes), ndim), axes)


def np_keep(scores, n, m, axes):
  g, moved_shape = _np_groups(scores, axes, m)
  flat = g.reshape(-1, m)
  keep = np.zeros(flat.shape, bool)
  for row, s in enumerate(flat):
    keep[row, np.argsort(-s, kind="stable")[:n]] = True
  return _np_ungroup(keep.reshape(g.shape), moved_shape, axes, scores.ndim)


def np_prox(z, t, n, m, axes):
  scores = np.maximum(np.abs(z) - np.broadcast_to(t, z.shape), 0)
  return np.where(np_keep(scores, n, m, axes), np.sign(z) * scores, 0).astype(z.dtype)


def _tied(rng, shape):
  """Values on a coarse grid: many exact ties in magnitude, and zeros."""
  return (rng.integers(-3, 4, shape) * 0.5).astype(np.float32)


@pytest.mark.parametrize("pattern", [(1, 4), (2, 4), (3, 4), (2, 8), (4, 4)])
@pytest.mark.parametrize("shape,spec,axes", LAYOUTS)
def test_mask_matches_numpy_with_ties_on_every_layout(shape, spec, axes, pattern):
  n, m = pattern
  if np.prod([shape[a] for a in axes]) % m:
    pytest.skip("input size not a multiple of M")
  rng = np.random.default_rng(0)
  for x in (_tied(rng, shape), rng.standard_normal(shape).astype(np.float32)):
    kw = dict(kernel_layout=spec) if isinstance(spec, str) else dict(axes=spec)
    got = np.asarray(jax.jit(lambda x: so.nm_mask(x, pattern, **kw))(x))
    np.testing.assert_array_equal(got, np_keep(np.abs(x), n, m, axes))
    g, _ = _np_groups(got, axes, m)
    assert np.all(g.sum(-1) == n)  # exactly N marked per group


@pytest.mark.parametrize("shape,spec,axes", LAYOUTS)
def test_prox_matches_numpy_with_ties_scalar_and_elementwise_thresholds(shape, spec, axes):
  rng = np.random.default_rng(1)
  spec = "HWIO" if spec is None else spec
  from sparse_optax import _nm  # the prox itself; the transforms' use is checked below
  found = _nm.input_axes(shape, spec, "x")
  assert found == axes
  for z, t in ((_tied(rng, shape), np.float32(0.5)), (_tied(rng, shape), np.float32(0.0)),
               (rng.standard_normal(shape).astype(np.float32),
                rng.uniform(0, 1, shape).astype(np.float32))):
    for pattern in ((2, 4), (1, 2)):
      got = np.asarray(jax.jit(lambda z, t: _nm.prox(z, t, pattern, found))(z, t))
      np.testing.assert_array_equal(got, np_prox(z, t, *pattern, axes))


def test_prox_is_the_exact_prox_by_enumerating_supports():
  """min over θ with at most N non-zeros per group of ½|θ - z|² + Σ t|θ|, by brute force."""
  import itertools
  rng = np.random.default_rng(2)
  z = rng.standard_normal((4, 1)).astype(np.float32)
  t = rng.uniform(0, 0.8, (4, 1)).astype(np.float32)
  from sparse_optax import _nm
  got = np.asarray(_nm.prox(jnp.asarray(z), jnp.asarray(t), (2, 4), (0,)))
  objective = lambda th: 0.5 * np.sum((th - z) ** 2) + np.sum(t * np.abs(th))
  best = min(objective(np.where(np.isin(np.arange(4), s)[:, None],
                                np.sign(z) * np.maximum(np.abs(z) - t, 0), 0))
             for s in itertools.combinations(range(4), 2))
  np.testing.assert_allclose(objective(got), best, rtol=1e-6)


def test_zero_threshold_keeps_the_n_largest_magnitudes():
  tx = so.soft_threshold(0.0, pattern="2:4")
  w = jnp.array([[1.0, 5.0], [-3.0, 0.0], [0.5, -2.0], [3.0, 1.0]])  # (in=4, out=2); a tie at 3
  updates, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
  np.testing.assert_array_equal(optax.apply_updates(w, updates),
                                [[0.0, 5.0], [-3.0, 0.0], [0.0, -2.0], [3.0, 0.0]])


def test_xrda_kernel_layout_places_the_groups_of_an_oihw_conv():
  params = {"k": jax.random.normal(jax.random.key(7), (4, 8, 3, 3))}  # OIHW: groups along I
  for kw in (dict(structure="channel"), dict(weights=so.uniform_l1_weights())):
    tx = so.xrda(0.1, 0.5, l1=0.0, momentum_timescale=1.0, pattern="2:4", kernel_layout="OIHW",
                 **kw)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    k = np.asarray(optax.apply_updates(params, updates)["k"])
    np.testing.assert_array_equal(k != 0, np_keep(np.abs(np.asarray(params["k"])), 2, 4, (1,)))


# ---------------------------------------------------------------------------------------------
# The pattern after every step.

TREE_AXES = {"dense": None, "conv": None, "qkv": 0, "out": (0, 1), "bias": None}


def _tree(seed=0):
  keys = jax.random.split(jax.random.key(seed), 5)
  shapes = {"dense": (8, 6), "conv": (3, 3, 8, 4), "qkv": (8, 2, 3), "out": (2, 4, 5),
            "bias": (6,)}
  return {k: 0.5 * jax.random.normal(key, s) for key, (k, s) in zip(keys, shapes.items())}


def _axes(params):
  return {k: ("HWIO" if a is None else a) for k, a in TREE_AXES.items()}


TARGET = jax.tree.map(lambda x: jnp.sign(x) * 0.3, _tree(5))


def _loss(p):
  return sum(jnp.sum((p[k] - TARGET[k]) ** 2) for k in p)


STEPPERS = {
    "xrda": lambda pat: so.xrda(0.1, 0.5, l1=1e-3, momentum_timescale=1.0, pattern=pat,
                                pattern_axes=_axes),
    "xrda_kernel": lambda pat: so.xrda(
        0.1, 0.5, l1=1e-3, momentum_timescale=1.0, pattern=pat, pattern_axes=_axes,
        structure={"dense": "unstructured", "conv": "kernel", "qkv": "unstructured",
                   "out": "unstructured", "bias": "unstructured"}),
    # The exact solve at every step (feedback alone lags B's growth over 8 steps here).
    "xrda_target": lambda pat: so.xrda(0.1, 0.5, sparsity=0.8, solve_every=1,
                                       momentum_timescale=1.0, pattern=pat,
                                       pattern_axes=_axes),
    "xrda_target_feedback": lambda pat: so.xrda(0.1, 0.5, sparsity=0.8, solve_every=None,
                                                momentum_timescale=1.0, pattern=pat,
                                                pattern_axes=_axes),
    "rda": lambda pat: so.rda(1.0, l1=1e-3, pattern=pat, pattern_axes=_axes),
    "prox_sgd": lambda pat: so.prox_sgd(0.1, l1=0.0, momentum=0.9, pattern=pat,
                                        pattern_axes=_axes),
    "prox_sgd_target_layer": lambda pat: so.prox_sgd(0.1, sparsity=0.3, scope="layer",
                                                     solve_every=1, pattern=pat,
                                                     pattern_axes=_axes),
    "gradual_pruning": lambda pat: optax.chain(
        optax.sgd(0.1, momentum=0.9),
        so.prune_by_magnitude(so.polynomial_sparsity(0.8, 0, 6), end_step=6, frequency=2,
                              pattern=pat, pattern_axes=_axes)),
}


@pytest.mark.parametrize("pattern", [(2, 4), (1, 4)])
@pytest.mark.parametrize("name", list(STEPPERS))
def test_pattern_holds_on_every_leaf_after_every_step(name, pattern):
  tx = STEPPERS[name](pattern)
  params = _tree()
  state = tx.init(params)
  step = jax.jit(_step(tx, _loss))
  for i in range(8):
    params, state = step(params, state)
    assert so.nm_violations(params, pattern, axes=_axes) == {}, (name, i)
    assert np.count_nonzero(params["bias"]) == 6  # outside the mask: untouched
  if name == "xrda_target_feedback":
    return  # its λ lags B's growth for 8 steps, and may empty leaves meanwhile
  # and the patterned leaves did train (not all zero)
  assert all(np.count_nonzero(params[k]) > 0 for k in ("dense", "conv", "qkv", "out"))


def test_sparsity_target_counts_the_patterns_zeros():
  """A target above 1 - N/M zeros exactly that many; one below leaves the pattern alone."""
  params = {"w": jax.random.normal(jax.random.key(3), (16, 8))}  # 128 weights, 2:4 zeros 64
  for sparsity, zeros in ((0.8, 102), (0.3, 64)):
    tx = so.soft_threshold(1.0, sparsity=sparsity, solve_every=1, pattern="2:4")
    updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    w = optax.apply_updates(params, updates)["w"]
    assert int(np.sum(np.asarray(w) == 0)) == zeros, sparsity
    assert so.nm_violations({"w": w}, "2:4") == {}
  # Above the pattern: the survivors are those of largest magnitude among the 2:4 ones.
  tx = so.soft_threshold(1.0, sparsity=0.8, solve_every=1, pattern="2:4")
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  w = np.asarray(optax.apply_updates(params, updates)["w"])
  patterned = np.where(np_keep(np.abs(np.asarray(params["w"])), 2, 4, (0,)),
                       np.abs(np.asarray(params["w"])), 0)
  kept = np.sort(patterned.ravel())[-26:]  # 128 - 102
  np.testing.assert_array_equal(w != 0, patterned >= kept[0])


@pytest.mark.parametrize("solve_every", [1000, None])
def test_a_target_the_pattern_meets_is_solved_once_and_a_rising_one_when_it_passes(solve_every):
  """λ = 0 is the exact answer where the pattern's own zeros meet the target: feedback cannot
  move it, and no solve is needed until the target asks for more zeros than the pattern's."""
  params = {"w": jax.random.normal(jax.random.key(5), (32, 16))}  # 512 weights, 2:4 zeros 256
  grads = [jax.tree.map(lambda x, i=i: jax.random.normal(jax.random.key(i), x.shape), params)
           for i in range(96)]

  def run(tx, steps):
    p, state, update, solves = params, tx.init(params), jax.jit(tx.update), []
    for g in grads[:steps]:
      updates, state = update(g, state, p)
      p = optax.apply_updates(p, updates)
      solves.append(int(so.target_state(state).solves))
    return np.asarray(p["w"]), so.target_state(state), solves

  for tx in (so.soft_threshold(1.0, sparsity=0.3, solve_every=solve_every, pattern="2:4"),
             so.xrda(0.1, 0.5, sparsity=0.5, solve_every=solve_every, momentum_timescale=9.5,
                     pattern="2:4")):
    w, target, _ = run(tx, 64)
    assert int(target.solves) == 1 and float(target.l1[0]) == 0.0  # step 0's solve alone
    assert int(np.sum(w == 0)) == 256 and so.nm_violations({"w": w}, "2:4") == {}
  # A target rising through the pattern's 50% to 75%: the next solve comes at the first step
  # past 50%, then the control follows it.
  ramp = optax.linear_schedule(0.0, 0.75, 32)
  w, target, solves = run(so.xrda(0.1, 0.5, sparsity=ramp, solve_every=solve_every,
                                  momentum_timescale=9.5, pattern="2:4"), 96)
  second = solves.index(2)
  assert float(ramp(second)) > 0.5 >= float(ramp(second - 1))
  assert float(target.l1[0]) > 0.0 and so.nm_violations({"w": w}, "2:4") == {}
  # Within the guard's tolerance; feedback alone overshoots a target this soon after its ramp
  # (soft_threshold's docstring), which it undoes slowly.
  zeros = np.mean(w == 0)
  assert (abs(np.log((1 - zeros) / 0.25)) < 0.25) if solve_every else (0.75 <= zeros < 0.9)


def test_pruning_pattern_is_the_magnitude_mask_then_the_schedule_prunes_beyond_it():
  w = jax.random.normal(jax.random.key(4), (8, 4))
  expected = np.where(np_keep(np.abs(np.asarray(w)), 2, 4, (0,)), np.asarray(w), 0)
  for sparsity in (0.0, 0.5):  # at most the pattern's: the pattern alone
    tx = so.prune_by_magnitude(sparsity, pattern=(2, 4))
    updates, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
    np.testing.assert_array_equal(optax.apply_updates(w, updates), expected)
  tx = so.prune_by_magnitude(0.75, pattern=(2, 4))  # beyond: the 8 largest of the 16 left
  updates, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
  got = np.asarray(optax.apply_updates(w, updates))
  threshold = np.sort(np.abs(expected).ravel())[-8]
  np.testing.assert_array_equal(got, np.where(np.abs(expected) >= threshold, expected, 0))


# ---------------------------------------------------------------------------------------------
# The checks the other transforms pass (tests/test_optimizers_common.py), on a tree that the
# pattern fits.

COMMON = {
    "xrda": lambda l1: (so.xrda, dict(learning_rate=0.1, averaging=0.5, l1=l1,
                                      momentum_timescale=1.0, pattern=(2, 4))),
    "xrda_target": lambda s: (so.xrda, dict(learning_rate=0.1, averaging=0.5, sparsity=s,
                                            solve_every=1, momentum_timescale=1.0,
                                            pattern=(2, 4))),
    "prox_sgd": lambda l1: (so.prox_sgd, dict(learning_rate=0.1, l1=l1, pattern="2:4")),
    "soft_threshold": lambda t: (so.soft_threshold, dict(threshold=t, pattern=(1, 4))),
    "prune_by_magnitude": lambda s: (so.prune_by_magnitude, dict(sparsity=s, pattern=(2, 4),
                                                                 begin_step=0)),
}
COMMON_START = {"w": jnp.linspace(-1.0, 1.0, 24).reshape(8, 3) + 0.03,
                "k": jnp.linspace(-1.0, 1.0, 36).reshape(3, 1, 4, 3), "b": jnp.ones(3)}


def _common_loss(p):
  return sum(jnp.sum((p[k] - 0.2) ** 2) for k in p)


def _chain(name, value, factory=None):
  base, kwargs = COMMON[name](value)
  tx = (factory or base)(**kwargs)
  if name in ("soft_threshold", "prune_by_magnitude"):
    tx = optax.chain(optax.sgd(0.1), tx)
  return tx


def _run(tx, params, steps, dtype=None):
  step = _step(tx, _common_loss)
  state = tx.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


@pytest.mark.parametrize("name", list(COMMON))
def test_jit_without_retracing_and_extra_args(name):
  tx = _chain(name, 0.5 if "target" in name or "prune" in name else 1e-3)
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(_step(tx, _common_loss, unexpected_extra_arg=1), n=1))
  params, state = COMMON_START, tx.init(COMMON_START)
  for _ in range(4):
    params, state = step(params, state)
  assert so.nm_violations(params, COMMON[name](0.0)[1]["pattern"]) == {}


@pytest.mark.parametrize("name", list(COMMON))
def test_inject_hyperparams_equals_the_plain_factory(name):
  value = 0.5 if "target" in name or "prune" in name else 1e-3
  base, _ = COMMON[name](value)
  plain, _ = _run(_chain(name, value), COMMON_START, 5)
  injected, state = _run(_chain(name, value, optax.inject_hyperparams(base)), COMMON_START, 5)
  chex.assert_trees_all_close(injected, plain, rtol=1e-6, atol=1e-6)
  assert "pattern" not in _find(state).hyperparams  # a tuple or str: static


def test_inject_hyperparams_with_int_or_callable_axes_needs_static_args():
  # An int would be injected as a traced hyper-parameter, a callable called on the count.
  factory = optax.inject_hyperparams(so.prox_sgd)
  with pytest.raises(TypeError, match=r"static_args=\('pattern_axes',\)"):
    factory(learning_rate=0.1, l1=0.0, pattern=(2, 4), pattern_axes=0).init(COMMON_START)
  factory = optax.inject_hyperparams(so.prox_sgd, static_args=("pattern_axes",))
  tx = factory(learning_rate=0.1, l1=0.0, pattern=(2, 4),
               pattern_axes=lambda p: {k: "HWIO" for k in p})
  params, _ = _run(tx, COMMON_START, 2)
  assert so.nm_violations(params, (2, 4)) == {}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("name", list(COMMON))
def test_dtypes_kept_and_state_stable_under_lax_cond(name, dtype):
  tx = _chain(name, 0.5 if "target" in name or "prune" in name else 1e-3)
  params = jax.tree.map(lambda x: x.astype(dtype), COMMON_START)
  state = tx.init(params)
  step = _step(tx, _common_loss)
  new_params, new_state = jax.jit(lambda p, s: jax.lax.cond(
      True, lambda: step(p, s), lambda: (p, s)))(params, state)
  assert jax.tree.map(lambda x: x.dtype, new_params) == jax.tree.map(lambda x: x.dtype, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
  assert so.nm_violations(new_params, COMMON[name](0.0)[1]["pattern"]) == {}


# ---------------------------------------------------------------------------------------------
# Sharded == replicated, on 8 fake CPU devices (tests/multidevice_check.py's runs).

MULTIDEVICE = textwrap.dedent("""
    import numpy as np, optax, sparse_optax as so
    from tests import multidevice_check as md  # sets XLA_FLAGS: 8 CPU devices
    axes = {"w": 1, "k": 3, "b": None}  # w's groups span fsdp's split of its axis 1
    cases = {
        "xrda_nm": so.xrda(0.1, 0.5, l1=1e-3, momentum_timescale=1.0, pattern=(2, 4),
                           pattern_axes=axes),
        "xrda_target_nm": so.xrda(0.1, 0.5, sparsity=0.7, solve_every=1,
                                  momentum_timescale=1.0, pattern=(2, 4), pattern_axes=axes),
        "prox_sgd_nm": so.prox_sgd(0.05, l1=1e-2, momentum=0.9, pattern=(1, 4),
                                   pattern_axes=axes),
        "gmp_nm": optax.chain(optax.sgd(0.05, momentum=0.9), so.prune_by_magnitude(
            so.polynomial_sparsity(0.8, 0, 3), end_step=3, pattern=(2, 4), pattern_axes=axes)),
    }
    for name, tx in cases.items():
      single = md.run_single(tx)
      assert so.nm_violations(single, (2, 4), axes=axes) == {}, name
      for how, got in (("mesh", md.run_mesh(tx)), ("pmap", md.run_pmap(tx)),
                       ("fsdp", md.run_fsdp(tx))):
        for key in single:
          np.testing.assert_allclose(got[key], single[key], rtol=2e-5, atol=2e-6,
                                     err_msg=f"{name} {how} {key}")
      print(f"{name}: single == mesh == pmap == fsdp", flush=True)
""")


def test_sharded_equals_replicated_on_8_devices():
  env = xla_flags.env(8)
  proc = subprocess.run([sys.executable, "-c", MULTIDEVICE], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for name in ("xrda_nm", "xrda_target_nm", "prox_sgd_nm", "gmp_nm"):
    assert f"{name}: single == mesh == pmap == fsdp" in proc.stdout, proc.stdout


# ---------------------------------------------------------------------------------------------
# Utilities.


@pytest.mark.parametrize("shape,spec,axes", LAYOUTS)
def test_compress_round_trip_and_bytes(shape, spec, axes):
  rng = np.random.default_rng(6)
  kw = dict(kernel_layout=spec) if isinstance(spec, str) else dict(axes=spec)
  x = rng.standard_normal(shape).astype(np.float32)
  x = np.where(np_keep(np.abs(x), 2, 4, axes), x, 0)
  x.flat[0] = 0.0  # a group with fewer than N non-zeros still stores N entries
  values, indices = so.nm_compress(x, "2:4", **kw)
  assert values.dtype == np.float32 and indices.dtype == np.uint8
  assert values.size == indices.size == x.size // 2
  assert values.nbytes + indices.nbytes == x.size // 2 * (4 + 1)
  back = jax.jit(lambda v, i: so.nm_decompress(v, i, "2:4", shape, **kw))(values, indices)
  np.testing.assert_array_equal(back, x)
  assert np.all(np.diff(np.asarray(indices), axis=axes[0] + 1) > 0)  # distinct, increasing


def test_violations_report_each_leaf_and_its_bad_groups():
  w = np.zeros((8, 3), np.float32)
  w[0:3, 0] = 1.0  # 3 in the first group of column 0
  w[4:8, 2] = 1.0  # 4 in the second group of column 2
  k = np.ones((3, 3, 4, 2), np.float32)  # every group of every (h, w, o): 18
  params = {"w": w, "k": k, "ok": np.eye(4, dtype=np.float32), "b": np.ones(3, np.float32)}
  assert so.nm_violations(params, "2:4") == {"w": 2, "k": 18}
  assert so.nm_violations(params, "3:4") == {"w": 1, "k": 18}
  assert so.nm_violations(params, "2:4", mask={"w": True, "k": False, "ok": True,
                                                "b": False}) == {"w": 2}
  assert so.nm_violations(params, "2:4", axes={"w": None, "k": None, "ok": 1, "b": None}) == {}



# ---------------------------------------------------------------------------------------------
# Bad inputs.


@pytest.mark.parametrize("pattern", [(5, 4), (0, 4), "2-4", (2, 4, 1), (2.0, 4), "a:b", 4])
def test_bad_patterns_are_refused(pattern):
  with pytest.raises(ValueError, match=r"soft_threshold: pattern"):
    so.soft_threshold(0.1, pattern=pattern)
  with pytest.raises(ValueError, match=r"prune_by_magnitude: pattern"):
    so.prune_by_magnitude(0.5, pattern=pattern)


def test_input_size_not_a_multiple_of_m_names_the_leaf_and_shape():
  params = {"layer": {"kernel": jnp.ones((6, 4))}}
  for tx, name in ((so.xrda(0.1, 0.5, l1=1e-3, momentum_timescale=1.0, pattern=(2, 4)),
                    "soft_threshold"),  # xrda's step that holds the pattern
                   (so.prune_by_magnitude(0.5, pattern=(2, 4)), "prune_by_magnitude")):
    with pytest.raises(ValueError, match=rf"{name}: leaf 'layer/kernel' has shape \(6, 4\); its "
                                         r"input dimension .* not a multiple of M=4"):
      tx.init(params)
  with pytest.raises(ValueError, match=r"not a multiple of M=4"):
    so.nm_mask(jnp.ones((3, 3, 3, 8)), (2, 4))  # a first conv on 3 channels


def test_leaves_that_are_not_matrices_are_refused_or_must_be_named():
  with pytest.raises(ValueError, match=r"'v' has shape \(8,\).*ndim >= 2"):
    so.soft_threshold(0.1, mask={"v": True}, pattern=(2, 4)).init({"v": jnp.ones(8)})
  # A 3-D leaf under a layout: a 1-D conv or an attention kernel? It must be named.
  with pytest.raises(ValueError, match=r"'q' has shape \(8, 2, 4\).*Name its input axes"):
    so.prox_sgd(0.1, l1=0.0, pattern=(2, 4)).init({"q": jnp.ones((8, 2, 4))})
  so.prox_sgd(0.1, l1=0.0, pattern=(2, 4), pattern_axes={"q": 0}).init({"q": jnp.ones((8, 2, 4))})
  with pytest.raises(ValueError, match=r"consecutive"):
    so.prox_sgd(0.1, l1=0.0, pattern=(2, 4), pattern_axes=(0, 2)).init(jnp.ones((4, 2, 4)))
  with pytest.raises(ValueError, match=r"not axes of it"):
    so.prox_sgd(0.1, l1=0.0, pattern=(2, 4), pattern_axes=3).init(jnp.ones((4, 2)))
  with pytest.raises(ValueError, match=r"pattern_axes does not match the params tree"):
    so.prox_sgd(0.1, l1=0.0, pattern=(2, 4), pattern_axes={"x": 0}).init({"w": jnp.ones((4, 2))})


def test_axes_without_a_pattern_are_refused():
  with pytest.raises(ValueError, match=r"xrda: pattern_axes .* without pattern="):
    so.xrda(0.1, 0.5, l1=1e-3, momentum_timescale=1.0, pattern_axes=0)
