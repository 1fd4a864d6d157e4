"""Heads and neurons in the models and the loop: export removes dead heads and neurons exactly
(models.thinning), the registered Transformers thin what xrda kills, and ``config.structure=
"groups"`` through the training loop (the library's own checks: tests/test_groups.py)."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so
from tests.test_optimizers_common import _train

REPO = Path(__file__).resolve().parents[1]


def _tiny_transformer_class():
  from flax import nnx
  from models.thinning import Family, Heads, Layer, Link

  class TinyTransformer(nnx.Module):
    """Pre-LN blocks of nnx.MultiHeadAttention and a GELU MLP, per-block heads and widths."""

    def __init__(self, dim=8, heads=(4, 4), head_dim=2, hidden=(6, 6), classes=5, *,
                 causal=False, rngs):
      self.dims = (dim, tuple(heads), head_dim, tuple(hidden), classes, causal)
      self.embed = nnx.Linear(3, dim, rngs=rngs)
      self.blocks = nnx.List()
      for h, width in zip(heads, hidden):
        block = nnx.Module()
        block.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        block.attn = nnx.MultiHeadAttention(h, dim, qkv_features=h * head_dim, out_features=dim,
                                            decode=False, deterministic=True, rngs=rngs)
        block.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        block.mlp = nnx.Module()
        block.mlp.fc1 = nnx.Linear(dim, width, rngs=rngs)
        block.mlp.fc2 = nnx.Linear(width, dim, rngs=rngs)
        self.blocks.append(block)
      self.head = nnx.Linear(dim, classes, rngs=rngs)

    def __call__(self, x):
      x = self.embed(x)
      mask = nnx.make_causal_mask(x[..., 0]) if self.dims[-1] else None
      for b in self.blocks:
        x = x + b.attn(b.ln1(x), mask=mask)
        x = x + b.mlp.fc2(nnx.gelu(b.mlp.fc1(b.ln2(x))))
      return self.head(x)

    def thinning_plan(self):
      dim, _, head_dim, _, classes, causal = self.dims
      fc = [(Layer(("blocks", i, "mlp", "fc1")), Layer(("blocks", i, "mlp", "fc2")))
            for i in range(len(self.blocks))]
      attention = [Heads(("blocks", i, "attn")) for i in range(len(self.blocks))]
      return Family(
          [layer for pair in fc for layer in pair],
          [Link(a, b, activation=nnx.gelu) for a, b in fc],
          lambda width: lambda rngs: TinyTransformer(
              dim, tuple(width(a) for a in attention), head_dim, tuple(width(a) for a, _ in fc),
              classes, causal=causal, rngs=rngs),
          heads=attention)

  return TinyTransformer


def _filled(model, seed=0):
  """Kernels U(±sqrt(3/fan_in)), biases and LayerNorms perturbed (no zero bias by accident)."""
  from flax import nnx
  rng = np.random.default_rng(seed)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    shape = var.get_value().shape
    if path[-1] == "kernel":
      fan_in = (shape[0] * shape[1] if path[-2] == "out" else shape[0])  # (heads, head_dim, d)
      value = rng.uniform(-1, 1, shape) * np.sqrt(3 / fan_in)
    else:
      value = (path[-1] == "scale") + 0.3 * rng.uniform(-1, 1, shape)
    var.set_value(jnp.asarray(value, jnp.float32))
  return model


def _zero(model, path, index, value=0.0):
  from models import thinning
  var = getattr(thinning._module(model, path[:-1]), path[-1])
  array = np.array(var.get_value())
  array[index] = value
  var.set_value(jnp.asarray(array))


@pytest.mark.parametrize("causal", [False, True])
def test_thin_removes_dead_heads_and_neurons_exactly(causal):
  from flax import nnx
  from models import thinning
  dim, head_dim = 8, 2
  model = _filled(_tiny_transformer_class()(causal=causal, rngs=nnx.Rngs(0)))
  a0, a1 = ("blocks", 0, "attn"), ("blocks", 1, "attn")
  for p in ("query", "key", "value"):  # block 0, head 1: every slice zero
    _zero(model, a0 + (p, "kernel"), (slice(None), 1))
    _zero(model, a0 + (p, "bias"), 1)
  _zero(model, a0 + ("out", "kernel"), 1)
  _zero(model, a0 + ("out", "kernel"), 2)  # block 0, head 2: unread
  _zero(model, a1 + ("value", "kernel"), (slice(None), 0))  # block 1, head 0: outputs its v bias
  _zero(model, a1 + ("query", "kernel"), (slice(None), 3))  # block 1, head 3: q, k zero, stays
  _zero(model, a1 + ("key", "kernel"), (slice(None), 3))
  m0, m1 = ("blocks", 0, "mlp"), ("blocks", 1, "mlp")
  _zero(model, m0 + ("fc1", "kernel"), (slice(None), 2))  # outputs gelu(b), folded into fc2
  _zero(model, m0 + ("fc2", "kernel"), 4)  # unread
  _zero(model, m1 + ("fc1", "kernel"), (slice(None), 0))  # all zero: gelu(0) = 0
  _zero(model, m1 + ("fc1", "bias"), 0)
  _zero(model, m1 + ("fc2", "kernel"), 0)

  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  structure = jax.tree.map(lambda _: "unstructured", params)
  for i in range(2):
    block = params["blocks"][i]
    structure["blocks"][i]["attn"] = so.head_groups(block["attn"], f"blocks/{i}/heads")
    fc1, fc2 = so.neuron_groups(block["mlp"]["fc1"], block["mlp"]["fc2"], f"blocks/{i}/neurons")
    structure["blocks"][i]["mlp"] = {"fc1": fc1, "fc2": fc2}
  dead = so.group_sparsity(params, structure)["sets"]
  assert {k: int(v["zero_groups"]) for k, v in dead.items()} == {
      "blocks/0/heads": 1, "blocks/0/neurons": 0, "blocks/1/heads": 0, "blocks/1/neurons": 1}

  thinned, report = thinning.thin(model)
  assert [a.kept for a in report.heads] == [(0, 3), (1, 2, 3)]
  assert [(a.heads_before, a.heads_after) for a in report.heads] == [(4, 2), (4, 3)]
  assert [layer.kept for layer in report.layers[::2]] == [(0, 1, 3, 5), (1, 2, 3, 4, 5)]
  assert thinned.blocks[0].attn.query.kernel.shape == (dim, 2, head_dim)
  assert thinned.blocks[1].attn.out.kernel.shape == (3, head_dim, dim)
  assert thinned.blocks[0].mlp.fc2.kernel.shape == (4, dim)
  x = jax.random.normal(jax.random.key(1), (3, 5, 3))
  np.testing.assert_allclose(thinned(x), model(x), atol=1e-5, rtol=0)

  per_head = 3 * (dim * head_dim + head_dim) + head_dim * dim
  per_neuron = dim + 1 + dim
  assert report.params_before - report.params_after == 3 * per_head + 3 * per_neuron
  count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert (count(model), count(thinned)) == (report.params_before, report.params_after)
  assert [a.params_before - a.params_after for a in report.heads] == [2 * per_head, per_head]
  assert "4 -> 2 heads" in str(report)


def test_thin_keeps_one_head_and_refuses_grouped_kv():
  from flax import nnx
  from models import thinning
  model = _filled(_tiny_transformer_class()(heads=(2, 2), rngs=nnx.Rngs(0)))
  _zero(model, ("blocks", 0, "attn", "out", "kernel"), slice(None))  # every head unread
  thinned, report = thinning.thin(model)
  assert report.heads[0].kept == (0,)
  x = jax.random.normal(jax.random.key(1), (2, 4, 3))
  np.testing.assert_allclose(thinned(x), model(x), atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="blocks/1/attn is not self-attention with as many k/v"):
    thinning._thin_heads(thinning.Heads(("blocks", 1, "attn")), {
        ("blocks", 1, "attn", "query", "kernel"): np.ones((8, 4, 2)),
        ("blocks", 1, "attn", "key", "kernel"): np.ones((8, 2, 2)),
        ("blocks", 1, "attn", "value", "kernel"): np.ones((8, 2, 2)),
        ("blocks", 1, "attn", "out", "kernel"): np.ones((4, 2, 8))})


@pytest.mark.parametrize("name,shape", [("vit_tiny", (28, 28, 1)), ("lm_tiny", (8,))])
def test_registered_transformers_thin_what_xrda_kills(name, shape):
  """A few xrda steps with the models' head/neuron groups at a strong l1 kill whole heads and
  neurons; thin removes them (and any other it can), the logits equal within 1e-5."""
  from flax import nnx
  import models
  structure = models.group_structure(name)  # the model's own, by name
  assert models.group_structure("resnet20") is None
  classes = 10 if name.startswith("vit") else 32
  model = models.get_model(name, classes, input_shape=shape, init_scale=20.0,
                           rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  if name.startswith("vit"):
    x = jax.random.normal(jax.random.key(1), (4, *shape))
    y = jnp.arange(4) % classes
  else:
    x = jax.random.randint(jax.random.key(1), (4, *shape), 0, classes)
    y = jnp.roll(x, -1, axis=1)

  def loss(p):
    state = nnx.state(nnx.merge(graphdef, nnx.state(model, nnx.Param)), nnx.Param)
    nnx.replace_by_pure_dict(state, p)
    logits = nnx.merge(graphdef, state)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  n = 40
  tx = so.xrda(so.cosine_decay(0.2, n), so.cosine_averaging(n), 0.01, momentum_timescale=2.0,
               structure=structure, mask=model.penalty_mask)
  params, _ = _train(tx, params, loss, n)
  dead = so.group_sparsity(params, structure, mask=model.penalty_mask)
  dead = {k: int(v["zero_groups"]) for k, v in dead["sets"].items()}
  assert sum(dead.values()) > 0, dead

  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  thinned, report = models.thin(model)
  for i, attention in enumerate(report.heads):
    assert attention.heads_before - attention.heads_after >= min(
        dead[f"blocks/{i}/heads"], attention.heads_before - 1)
  for i, fc1 in enumerate(report.layers[::2]):
    assert fc1.out_before - fc1.out_after >= min(dead[f"blocks/{i}/neurons"], fc1.out_before - 1)
  forward = nnx.jit(lambda m, x: m(x))  # the graphdefs hash (jit keys on them)
  np.testing.assert_allclose(forward(thinned, x), forward(model, x), atol=1e-5, rtol=0)
  count = lambda m: sum(v.size for v in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert count(thinned) == report.params_after < report.params_before == count(model)


# ------------------------------------------------------------------------- in the training loop


def test_the_loop_trains_heads_and_neurons_as_groups_and_logs_the_dead_ones(tmp_path):
  """``config.structure="groups"`` through ``python -m train.main``: a strong l1 kills every head
  and neuron, and each epoch's record counts them per block."""
  import json

  from flax import nnx

  import models
  from tests.test_text_data import _write_corpus
  _write_corpus(tmp_path / "raw" / "shakespeare", count=10, seed=1, chars=1500)
  overrides = dict(model="lm_tiny", data_dir=str(tmp_path / "tfds"), num_epochs=1, batch_size=8,
                   eval_batch_size=8, progress_bar=False, structure="groups", l1=10.0)
  command = [sys.executable, "-m", "train.main",
             "--config=train/configs/lm_shakespeare_xrda_cpu.py", f"--workdir={tmp_path / 'w'}",
             *(f"--config.{k}={v}" for k, v in overrides.items())]
  env = {**os.environ, "SPARSE_OPTAX_RAW_DATA": str(tmp_path / "raw"), "SPARSE_OPTAX_DOWNLOAD": "0"}
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((tmp_path / "w" / "metrics.jsonl").read_text().splitlines()[-1])
  model = models.get_model("lm_tiny", 256, input_shape=(16,), rngs=nnx.Rngs(0))
  blocks = len(model.blocks)
  heads = model.blocks[0].attn.num_heads
  neurons = model.blocks[0].mlp.fc1.out_features
  assert record["dead_groups"] == {
      **{f"blocks/{i}/heads": {"groups": heads, "zero": heads} for i in range(blocks)},
      **{f"blocks/{i}/neurons": {"groups": neurons, "zero": neurons} for i in range(blocks)}}
  # The run exports thinned (one head and one neuron a block kept), tokens in, logits unchanged.
  from train import export
  report = export.export(tmp_path / "w", "thin", latency_calls=3)
  assert report["flipped_predictions"] == 0 and report["max_abs_logit_difference"] < 1e-4
  assert report["test_accuracy"] == pytest.approx(record["test_accuracy"], abs=1e-6)
  assert report["params"] < report["params_dense"]
  assert [(h["before"], h["after"]) for h in report["heads"]] == [(heads, 1)] * blocks


def test_groups_need_a_model_that_declares_them():
  from train import configuration
  from train.configs import default
  config = default.get_config()
  config.model, config.structure = "lenet300100", "groups"
  with pytest.raises(ValueError, match="model 'lenet300100' declares none"):
    configuration.validate_config(config)
