"""Groups tied across leaves: attention heads and MLP neurons (so.tied, so.head_groups,
so.neuron_groups), their log-l1 weights against a NumPy transcription, xrda with them, the
dead-group count, sharding, checkpoints and bad inputs (export and the loop:
tests/test_groups_models.py)."""

import math
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so
from tests import numpy_reference as ref
from tests import xla_flags
from tests.test_math import _f32
from tests.test_math import run_steps as _run
from tests.test_optimizers_common import _train

REPO = Path(__file__).resolve().parents[1]
D, H, HD, HIDDEN = 3, 2, 2, 4  # model width, heads, head dim, MLP hidden width
HP = dict(s0=0.5, lam=3e-2, wd=5e-4, T=3.0, Tb=2.0, F=50.0)
N_STEPS = 12


def _params(seed=0, d=D, h=H, hd=HD, hidden=HIDDEN):
  """One attention layer in Flax NNX's layout and one MLP, float64 NumPy."""
  rng = np.random.default_rng(seed)
  n = lambda *shape: rng.normal(0, 0.5, shape)
  attn = {name: {"kernel": n(d, h, hd), "bias": n(h, hd)} for name in ("query", "key", "value")}
  attn["out"] = {"kernel": n(h, hd, d), "bias": n(d)}
  mlp = {"fc1": {"kernel": n(d, hidden), "bias": n(hidden)},
         "fc2": {"kernel": n(hidden, d), "bias": n(d)}}
  return {"attn": attn, "mlp": mlp, "norm": {"scale": np.ones(d)}}


def _structure(params):
  fc1, fc2 = so.neuron_groups(params["mlp"]["fc1"], params["mlp"]["fc2"], "mlp/neurons")
  return {"attn": so.head_groups(params["attn"], "attn/heads"), "mlp": {"fc1": fc1, "fc2": fc2},
          "norm": "unstructured"}




# What each group reads, written out by hand: (leaf path, index of the slice of group i).
def _head_slices(h):
  return ([(("attn", p, "kernel"), (slice(None), h, slice(None)))
           for p in ("query", "key", "value")]
          + [(("attn", p, "bias"), (h, slice(None))) for p in ("query", "key", "value")]
          + [(("attn", "out", "kernel"), (h, slice(None), slice(None)))])


def _neuron_slices(j, bias=False):
  named = [(("mlp", "fc1", "kernel"), (slice(None), j)), (("mlp", "fc2", "kernel"), (j, slice(None)))]
  return named + ([(("mlp", "fc1", "bias"), (j,))] if bias else [])


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _sets(params):
  """Per group set: its slices per group, by hand (the default mask: the 1-D MLP bias is out)."""
  return {"attn/heads": [_head_slices(h) for h in range(H)],
          "mlp/neurons": [_neuron_slices(j) for j in range(HIDDEN)]}


def _group_magnitudes(params, slices):
  """(groups,) mean |θ| over each group's slices, and c = √(weights per group)."""
  sums = np.array([sum(np.abs(_get(params, p)[ix]).sum() for p, ix in group) for group in slices])
  counts = {sum(np.abs(_get(params, p)[ix]).size for p, ix in group) for group in slices}
  (n,) = counts
  return sums / n, math.sqrt(n)


def test_helpers_write_the_nnx_layout():
  nnx = pytest.importorskip("flax.nnx")  # not a library dependency: skipped at the lowest pins
  attn = nnx.MultiHeadAttention(H, D, qkv_features=H * HD, decode=False, rngs=nnx.Rngs(0))
  state = nnx.state(attn, nnx.Param)
  for tree in (nnx.to_pure_dict(state), state):  # pure dicts, as the train loop holds, or State
    s = so.head_groups(tree, "h")
    assert jax.tree.structure(s) == jax.tree.structure(
        jax.tree.map(lambda _: 0, tree)), "the params' own containers"
  s = so.head_groups(nnx.to_pure_dict(state), "h")
  for p in ("query", "key", "value"):
    assert s[p] == {"kernel": so.tied("h", 1), "bias": so.tied("h", 0)}
  assert s["out"] == {"kernel": so.tied("h", 0), "bias": "unstructured"}
  fc1, fc2 = so.neuron_groups({"kernel": np.zeros((D, HIDDEN)), "bias": np.zeros(HIDDEN)},
                              {"kernel": np.zeros((HIDDEN, D)), "bias": np.zeros(D)}, "n")
  assert fc1 == {"kernel": so.tied("n", 1), "bias": so.tied("n", 0)}
  assert fc2 == {"kernel": so.tied("n", 0), "bias": "unstructured"}


def test_a_group_reads_exactly_its_slices():
  """The derivative of each group's running magnitude is non-zero on its slices and nowhere
  else: a head reads q, k, v [:, h, :], their biases [h, :] and out [h, :, :]; a neuron
  fc1 [:, j] and fc2 [j, :] (its 1-D bias is outside the default mask)."""
  params = _f32(_params())
  w = so.log_l1_weights(1.0, 1.0, structure=_structure)
  state = w.init(params)
  jac = jax.jacfwd(lambda p: w.update(state, p)[1].magnitude)(params)
  r_size = state.magnitude.size
  # The packed r: the untied leaves' (here scalars for unmasked leaves), then H heads, then
  # HIDDEN neurons.
  offsets = {"attn/heads": r_size - H - HIDDEN, "mlp/neurons": r_size - HIDDEN}
  for name, groups in _sets(params).items():
    for i, slices in enumerate(groups):
      expected = jax.tree.map(lambda x: np.zeros(x.shape, bool), params)
      for p, ix in slices:
        _get(expected, p)[ix] = True
      got = jax.tree.map(lambda d: np.asarray(d[offsets[name] + i]) != 0, jac)
      for (path, e), g in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(got)):
        np.testing.assert_array_equal(g, e, err_msg=f"{name}[{i}] {jax.tree_util.keystr(path)}")


def test_weights_and_threshold_match_numpy():
  """r, w = c F / (1 + (F-1) r / max r) and B per group over two steps, broadcast back to each
  member leaf along its tied axis; untied leaves as before."""
  params = _params()
  s, alpha, T, F = 0.3, 0.7, 2.0, 20.0
  thr = so.accumulated_threshold(1.0, s, alpha, so.log_l1_weights(
      s, T, maximum_factor=F, structure=_structure))
  state = thr.init(_f32(params))
  mu = math.exp(-s / T)
  sets = _sets(params)
  r = {name: np.zeros(len(g)) for name, g in sets.items()}
  B = {name: np.zeros(len(g)) for name, g in sets.items()}
  for step in range(2):
    p = jax.tree.map(lambda x: x * (1 + 0.5 * step), params)
    t, state = thr.update(state, _f32(p))
    for name, groups in sets.items():
      mag, c = _group_magnitudes(p, groups)
      r[name] = mu * r[name] + (1 - mu) * mag
      w = c * F / (1 + (F - 1) * r[name] / r[name].max())
      B[name] = alpha * B[name] + s * w
      for i, group in enumerate(groups):
        for path, ix in group:
          got = np.broadcast_to(_get(t, path), _get(p, path).shape)[ix]
          np.testing.assert_allclose(got, B[name][i], rtol=1e-5, err_msg=f"{name}[{i}] {path}")
    # outside the mask (1-D biases, the norm's scale): no threshold
    for path in (("attn", "out", "bias"), ("mlp", "fc1", "bias"), ("mlp", "fc2", "bias"),
                 ("norm", "scale")):
      assert float(jnp.max(_get(t, path))) == 0.0, path


def test_a_penalised_bias_joins_its_neuron():
  params = _f32(_params())
  mask = jax.tree.map(lambda _: True, params)
  mask["norm"]["scale"] = False
  w = so.log_l1_weights(1.0, 1.0, structure=_structure, mask=mask)
  r = w.update(w.init(params), params)[1].magnitude[-HIDDEN:]
  mag, _ = _group_magnitudes(jax.tree.map(np.asarray, params),
                             [_neuron_slices(j, bias=True) for j in range(HIDDEN)])
  np.testing.assert_allclose(r, (1 - math.exp(-1.0)) * mag, rtol=1e-5)


def _grads(tree, n, seed=1):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda x: rng.normal(0, 0.3, x.shape), tree) for _ in range(n)]




def _xrda(**kw):
  return so.xrda(so.cosine_decay(HP["s0"], N_STEPS), so.cosine_averaging(N_STEPS), HP["lam"],
                 momentum_timescale=HP["T"], magnitude_timescale=HP["Tb"],
                 maximum_factor=HP["F"], weight_decay=HP["wd"], structure=_structure, **kw)


def test_xrda_with_heads_and_neurons_matches_numpy():
  theta0 = _params()
  grads = _grads(theta0, N_STEPS)
  got, _ = _run(_xrda(), _f32(theta0), grads)

  # NumPy: per leaf z and v, per group r and B; the leaves outside the groups are the 1-D ones,
  # outside the mask (θ = z).
  leaves0, treedef = jax.tree.flatten(theta0)
  paths = [tuple(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(theta0)]
  duals = [ref.XRDA(x) for x in leaves0]
  sets = _sets(theta0)
  r = {name: np.zeros(len(g)) for name, g in sets.items()}
  B = {name: np.zeros(len(g)) for name, g in sets.items()}
  theta = treedef.unflatten(leaves0)
  zeros_seen = 0
  for n in range(N_STEPS):
    s, alpha = ref.cosine_lr(HP["s0"], N_STEPS, n), ref.cosine_alpha(N_STEPS, n)
    mu_b = math.exp(-s / HP["Tb"])
    thresholds = {}
    for name, groups in sets.items():
      mag, c = _group_magnitudes(theta, groups)
      r[name] = mu_b * r[name] + (1 - mu_b) * mag
      w = c * HP["F"] / (1 + (HP["F"] - 1) * r[name] / r[name].max())
      B[name] = alpha * B[name] + s * w
      for i, group in enumerate(groups):
        for path, ix in group:
          t = thresholds.setdefault(path, np.zeros(_get(theta, path).shape))
          t[ix] = HP["lam"] * B[name][i]
    new = []
    for path, dual, x, g in zip(paths, duals, jax.tree.leaves(theta), jax.tree.leaves(grads[n])):
      z = _dual_only(dual, x, g, s, alpha)
      new.append(ref.soft(z, thresholds[path]) if path in thresholds else z)
    theta = treedef.unflatten(new)
    for a, b in zip(jax.tree.leaves(got[n]), new):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
      zeros_seen += int(np.sum(b == 0))
  assert zeros_seen > 0, "the test must exercise the threshold"


def _dual_only(leaf, theta, g, s, alpha):
  """ref.XRDA's dual average z alone (momentum v, interpolation, step; its r and B unused)."""
  g = np.asarray(g, np.float64) + HP["wd"] * theta
  leaf.z = alpha * leaf.z + (1 - alpha) * theta
  mu = math.exp(-s / HP["T"])
  leaf.v = mu * leaf.v + (1 - mu) * g
  leaf.z = leaf.z - s * leaf.v
  return leaf.z


def test_dead_groups_are_counted():
  params = _params()
  attn, mlp = params["attn"], params["mlp"]
  for p in ("query", "key", "value"):  # head 1 dead in every slice
    attn[p]["kernel"][:, 1, :] = 0.0
    attn[p]["bias"][1, :] = 0.0
  attn["out"]["kernel"][1] = 0.0
  attn["query"]["kernel"][:, 0, :] = 0.0  # head 0 only partly
  mlp["fc1"]["kernel"][:, [0, 2]] = 0.0  # neurons 0 and 2; 3 only in fc2
  mlp["fc2"]["kernel"][[0, 2, 3]] = 0.0
  mlp["fc1"]["bias"][:] = 1.0  # outside the default mask: it does not keep a neuron alive
  out = jax.jit(lambda p: so.group_sparsity(p, _structure))(_f32(params))
  assert out["groups"] == H + HIDDEN
  assert int(out["zero_groups"]) == 3
  assert {k: (v["groups"], int(v["zero_groups"])) for k, v in out["sets"].items()} == {
      "attn/heads": (H, 1), "mlp/neurons": (HIDDEN, 2)}
  # with the MLP bias penalised, it keeps neurons 0 and 2 alive
  mask = jax.tree.map(lambda x: True, params)
  out = so.group_sparsity(_f32(params), _structure, mask=mask)
  assert int(out["sets"]["mlp/neurons"]["zero_groups"]) == 0
  # no tied groups: nothing to count
  assert so.group_sparsity(_f32(params), "unstructured")["groups"] == 0


def test_whole_heads_and_neurons_die():
  """Trained on a loss that does not need head 1 or neurons 2, 3, those die whole."""
  theta0 = _f32(_params())
  target = jax.tree.map(jnp.zeros_like, theta0)
  target["attn"]["query"]["kernel"] = theta0["attn"]["query"]["kernel"].at[:, 1].set(0.0)
  target["mlp"]["fc1"]["kernel"] = theta0["mlp"]["fc1"]["kernel"].at[:, 2:].set(0.0)
  target["mlp"]["fc2"]["kernel"] = theta0["mlp"]["fc2"]["kernel"].at[2:].set(0.0)
  loss = lambda p: sum(jnp.sum((a - b) ** 2) for a, b in zip(
      jax.tree.leaves(p), jax.tree.leaves(target)))
  n = 150
  tx = so.xrda(so.cosine_decay(0.1, n), so.cosine_averaging(n), 2e-2, momentum_timescale=2.0,
               maximum_factor=200.0, structure=_structure)
  params, _ = _train(tx, theta0, loss, n)
  out = so.group_sparsity(params, _structure)
  assert int(out["sets"]["attn/heads"]["zero_groups"]) == 1
  assert int(out["sets"]["mlp/neurons"]["zero_groups"]) == 2
  assert np.all(np.asarray(params["attn"]["out"]["kernel"][1]) == 0)
  assert np.all(np.asarray(params["mlp"]["fc2"]["kernel"][2:]) == 0)
  assert np.all(np.asarray(params["attn"]["query"]["kernel"][:, 0]) != 0)  # the kept head


def test_sparsity_target_counts_elements_under_jit():
  theta0 = _params()
  grads = _grads(theta0, 6)
  masked = [x for x in jax.tree.leaves(theta0) if x.ndim >= 2]
  total = sum(x.size for x in masked)
  tx = so.xrda(0.3, 0.5, sparsity=0.6, solve_every=1, momentum_timescale=2.0,
               structure=_structure)
  got, state = _run(tx, _f32(theta0), grads)
  for p in got:
    zeros = sum(int(np.sum(np.asarray(x) == 0)) for x in jax.tree.leaves(p) if x.ndim >= 2)
    assert zeros == math.floor(0.6 * total)
  assert so.target_state(state).l1.shape == (1,)


def test_checkpoint_round_trip(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")  # the loop's: not at the lowest pins
  theta0 = _f32(_params())
  grads = _grads(theta0, 8)
  tx = _xrda()
  straight, _ = _run(tx, theta0, grads)
  first, state = _run(tx, theta0, grads[:4])
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "ckpt", {"params": first[-1], "opt_state": state})
    ckpt.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": first[-1],
                                                              "opt_state": state})
    restored = ckpt.restore(tmp_path / "ckpt", abstract)
  resumed, _ = _run(tx, restored["params"], grads[4:], state=restored["opt_state"])
  for a, b in zip(jax.tree.leaves(resumed[-1]), jax.tree.leaves(straight[-1])):
    np.testing.assert_array_equal(a, b)


def test_bfloat16_params():
  """bfloat16 params: the weights keep the leaves' dtype, r the state's (bfloat16 by default)."""
  params = {"fc1": {"kernel": jnp.ones((512, 2), jnp.bfloat16)},
            "fc2": {"kernel": jnp.ones((2, 3), jnp.bfloat16)}}
  s1, s2 = so.neuron_groups(params["fc1"], params["fc2"], "n")
  w = so.log_l1_weights(1.0, 1.0, structure={"fc1": s1, "fc2": s2})
  weights, state = w.update(w.init(params), params)
  assert weights["fc1"]["kernel"].dtype == state.magnitude.dtype == jnp.bfloat16
  np.testing.assert_allclose(state.magnitude.astype(np.float32), 1 - math.exp(-1.0), rtol=1e-2)
  tx = so.xrda(0.1, 0.5, 1e-3, momentum_timescale=1.0, structure={"fc1": s1, "fc2": s2})
  updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
  assert updates["fc1"]["kernel"].dtype == jnp.bfloat16


def test_state_holds_r_once_per_group():
  params = _f32(_params())
  state = so.log_l1_weights(1.0, 1.0, structure=_structure).init(params)
  untied = 4  # the 1-D leaves' scalars
  assert state.magnitude.shape == (untied + H + HIDDEN,)
  # a tree without tied groups packs as before
  plain = so.log_l1_weights(1.0, 1.0, structure=jax.tree.map(lambda _: "unstructured", params))
  assert plain.init(params).magnitude.size == sum(
      x.size if x.ndim >= 2 else 1 for x in jax.tree.leaves(params))


@pytest.mark.parametrize("edit,match", [
    (lambda s: s["attn"]["out"].update(kernel=so.tied("attn/heads", 2)),
     r"leaf attn/out/kernel has 3 slices along its tied axis 2 \(shape \(2, 2, 3\)\), but leaf "
     r"attn/key/bias has 2 along axis 0"),
    (lambda s: s["mlp"]["fc2"].update(kernel=so.tied("mlp/neurons", 1)),
     r"leaf mlp/fc2/kernel has 3 slices along its tied axis 1 \(shape \(4, 3\)\), but leaf "
     r"mlp/fc1/kernel has 4 along axis 1: the leaves of group set 'mlp/neurons'"),
    (lambda s: s["attn"]["query"].update(kernel=so.tied("attn/heads", 3)),
     r"leaf attn/query/kernel has shape \(3, 2, 2\); its tied axis 3 \(group set "
     r"'attn/heads'\) is out of range for ndim 3"),
    (lambda s: s["mlp"]["fc1"].update(kernel="neurons"),
     r"leaf mlp/fc1/kernel: structure must be one of .* or so.tied\(group, axis\)"),
])
def test_bad_groups_name_the_leaf(edit, match):
  params = _f32(_params())
  structure = _structure(params)
  edit(structure)
  with pytest.raises(ValueError, match="log_l1_weights: " + match):
    so.xrda(0.1, 0.5, 1e-3, momentum_timescale=1.0, structure=structure).init(params)
  if "tied axis" in match:  # group_sparsity reads only the tied leaves
    with pytest.raises(ValueError, match="group_sparsity: " + match):
      so.group_sparsity(params, structure)


def test_tied_refuses_bad_arguments():
  with pytest.raises(TypeError, match="group must be a non-empty str"):
    so.tied(3, 1)
  with pytest.raises(TypeError, match="axis must be an int"):
    so.tied("heads", 1.0)
  with pytest.raises(ValueError, match="structure must be one of"):
    so.xrda(0.1, 0.5, 1e-3, momentum_timescale=1.0, structure="heads")


def test_fsdp_gives_the_replicated_params_on_8_devices():
  """Params and state split over a (data, model) mesh, heads and neurons across devices: the
  same params as on one device (this file's worker, in a process with 8 CPU devices)."""
  env = xla_flags.env(8, PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  assert "sharded == single" in proc.stdout, proc.stdout


def _worker() -> None:
  import functools
  from jax.sharding import NamedSharding, PartitionSpec as P
  assert jax.device_count() == 8, jax.devices()
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  theta0 = _f32(_params(d=8, h=4, hd=2, hidden=8))
  qkv = {"kernel": P("data", "model", None), "bias": P("model", None)}
  specs = {"attn": {"query": qkv, "key": qkv, "value": qkv,
                    "out": {"kernel": P("model", None, "data"), "bias": P()}},
           "mlp": {"fc1": {"kernel": P("data", "model"), "bias": P("model")},
                   "fc2": {"kernel": P("model", "data"), "bias": P()}},
           "norm": {"scale": P()}}
  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                           is_leaf=lambda x: isinstance(x, P))
  grads = _grads(theta0, 6, seed=4)
  for name, tx in (("l1", so.xrda(0.3, 0.6, 6e-2, momentum_timescale=2.0, structure=_structure)),
                   ("target", so.xrda(0.3, 0.6, sparsity=0.7, momentum_timescale=2.0,
                                      structure=_structure))):
    single, _ = _run(tx, theta0, grads)
    p = jax.device_put(theta0, shardings)
    state = tx.init(p)
    state_shardings = optax.tree.map_params(
        tx, lambda _, sharding: sharding, state, shardings,
        transform_non_params=lambda _: NamedSharding(mesh, P()))
    state = jax.device_put(state, state_shardings)

    @functools.partial(jax.jit, out_shardings=(shardings, state_shardings))
    def step(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    if name == "l1":  # (the target's density count gathers chunks of leaves of its own)
      # The group sums are reductions of the sharded leaves: no leaf is gathered, only the
      # (groups,) vectors that the replicated state holds.
      hlo = step.lower(p, state, p).compile().as_text()
      gathered = [math.prod(int(d) for d in dims.split(",") if d) for dims in
                  re.findall(r"= [a-z0-9]+\[([0-9,]*)\][^ ]* all-gather\(", hlo)]
      assert 0 < max(gathered) <= 8, gathered

    for g in grads:
      p, state = step(p, state, jax.device_put(_f32(g), shardings))
    assert not p["attn"]["query"]["kernel"].sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(single[-1])):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)
    dead = so.group_sparsity(p, _structure)
    assert int(dead["zero_groups"]) == int(so.group_sparsity(single[-1], _structure)["zero_groups"])
    zeros = sum(int(np.sum(np.asarray(x) == 0)) for x in jax.tree.leaves(p))
    print(f"{name}: sharded == single ({zeros} zeros, {int(dead['zero_groups'])} dead groups)")


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  _worker()
