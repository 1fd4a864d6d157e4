"""The Transformers (models/transformer.py, vit.py, lm.py): sizes by hand, the head and neuron
layout, causal masking, the penalty mask in the optimizer, and short trainings whose loss falls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models import lm, transformer, vit

REPO = Path(__file__).resolve().parents[1]


def _param_count(model) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_vit_tiny_shapes_and_parameters_by_hand():
  model = models.get_model("vit_tiny", 10, input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
  assert model(jnp.zeros((3, 28, 28, 1))).shape == (3, 10)
  # patch 7·7·1·32 + 32 = 1,600; positions 16·32 = 512; per block: q, k, v 3·(32·32 + 32),
  # out 32·32 + 32, MLP 32·64 + 64 + 64·32 + 32, two LayerNorms 4·32: 8,544, twice; final
  # LayerNorm 64; head 32·10 + 10 = 330.
  assert _param_count(model) == 1600 + 512 + 2 * 8544 + 64 + 330 == 19594
  assert vit.vit_params(10, (28, 28, 1), **vit.VIT_TINY) == 19594
  assert model.blocks[0].attn.query.kernel.shape == (32, 2, 16)  # (dim, heads, head_dim)
  assert model.blocks[0].attn.out.kernel.shape == (2, 16, 32)  # (heads, head_dim, dim)
  assert model.blocks[0].mlp.fc1.kernel.shape == (32, 64)
  assert model.blocks[0].mlp.fc2.kernel.shape == (64, 32)


def test_cpu_sized_parameters():
  model = models.get_model("vit", 10, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
  assert _param_count(model) == vit.vit_params(10, (32, 32, 3), **vit.VIT_CIFAR) == 545930
  model = models.get_model("lm", 256, input_shape=(128,), rngs=nnx.Rngs(0))
  # 256·128 + 128·128 embeddings, 4 blocks of 66,048 (attention) + 131,712 (MLP) + 512, 256,
  # head 128·256 + 256.
  assert _param_count(model) == 32768 + 16384 + 4 * 198272 + 256 + 33024 == 875520
  assert lm.lm_params(256, 128, **lm.LM_SMALL) == 875520


def test_lm_tiny_shapes_and_parameters_by_hand():
  model = models.get_model("lm_tiny", 256, input_shape=(16,), rngs=nnx.Rngs(0))
  assert model(jnp.zeros((2, 16), jnp.int32)).shape == (2, 16, 256)
  assert model(jnp.zeros((2, 5), jnp.int32)).shape == (2, 5, 256)  # shorter than the context
  # tokens 256·32 = 8,192; positions 16·32 = 512; two blocks of 8,544; LayerNorm 64;
  # head 32·256 + 256 = 8,448.
  assert _param_count(model) == 8192 + 512 + 2 * 8544 + 64 + 8448 == 34304
  assert lm.lm_params(256, 16, **lm.LM_TINY) == 34304


def test_uniform_init_draws_with_each_kernels_fan_in():
  model = models.get_model("vit", 10, input_shape=(32, 32, 3), init="uniform", rngs=nnx.Rngs(0))
  attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
  # U(±sqrt(3 / fan_in)) has standard deviation 1 / sqrt(fan_in): fan_in 128 for q and fc1
  # (dim), 128 for out (heads·head_dim), 256 for fc2 (mlp_dim).
  for kernel, fan_in in ((attn.query.kernel, 128), (attn.out.kernel, 128),
                         (mlp.fc1.kernel, 128), (mlp.fc2.kernel, 256)):
    assert float(jnp.std(kernel[...])) == pytest.approx(fan_in ** -0.5, rel=0.05)
    assert float(jnp.max(jnp.abs(kernel[...]))) <= (3 / fan_in) ** 0.5


def _randomised(module, seed=1):
  """Every param of ``module`` redrawn N(0, 0.3²), biases included (zeros hide layouts)."""
  state = nnx.state(module, nnx.Param)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  nnx.update(module, jax.tree.unflatten(
      tree, [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))
  return module


def test_attention_head_h_is_the_named_slices():
  block = _randomised(transformer.Block(8, 2, 16, rngs=nnx.Rngs(0)))
  attn = block.attn
  x = jax.random.normal(jax.random.key(2), (2, 5, 8))
  q, k, v, o = (attn.query, attn.key, attn.value, attn.out)
  heads = []
  for h in range(2):  # head h by hand from [:, h, :] of q, k, v (bias [h]) and out [h, :, :]
    qh, kh, vh = (x @ m.kernel[:, h, :] + m.bias[h][None, None] for m in (q, k, v))
    weights = jax.nn.softmax(qh @ jnp.swapaxes(kh, -1, -2) / np.sqrt(4), axis=-1)
    heads.append(weights @ vh @ o.kernel[h])
  np.testing.assert_allclose(attn(x), heads[0] + heads[1] + o.bias[None, None], atol=1e-5)
  # Zeroing head 1's slices leaves exactly head 0's contribution.
  for m in (q, k, v):
    m.kernel[...] = m.kernel[...].at[:, 1, :].set(0.0)
    m.bias[...] = m.bias[...].at[1].set(0.0)
  o.kernel[...] = o.kernel[...].at[1].set(0.0)
  np.testing.assert_allclose(attn(x), heads[0] + o.bias[None, None], atol=1e-5)


def test_mlp_neuron_j_is_column_j_then_row_j():
  mlp = _randomised(transformer.Mlp(8, 6, init="normal", init_scale=1.0, rngs=nnx.Rngs(0)))
  x = jax.random.normal(jax.random.key(3), (4, 8))
  by_neuron = sum(nnx.gelu(x @ mlp.fc1.kernel[:, j] + mlp.fc1.bias[j])[:, None]
                  * mlp.fc2.kernel[j][None] for j in range(6))
  np.testing.assert_allclose(mlp(x), by_neuron + mlp.fc2.bias[None], atol=1e-5)


def test_lm_logits_at_t_do_not_see_tokens_after_t():
  model = models.get_model("lm_tiny", 256, input_shape=(16,), rngs=nnx.Rngs(0))
  _randomised(model)
  tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, 256)
  t = 7
  changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 1) % 256)
  before, after = model(tokens), model(changed)
  np.testing.assert_allclose(before[:, :t + 1], after[:, :t + 1], atol=1e-6)
  assert not np.allclose(before[:, t + 1:], after[:, t + 1:], atol=1e-3)
  # ...and position t does see token t.
  at_t = model(tokens.at[:, t].set((tokens[:, t] + 1) % 256))
  assert not np.allclose(before[:, t], at_t[:, t], atol=1e-3)


def test_the_penalty_mask_leaves_embeddings_and_norms_out():
  params = nnx.to_pure_dict(nnx.state(
      models.get_model("lm_tiny", 256, input_shape=(16,), rngs=nnx.Rngs(0)), nnx.Param))
  mask = models.penalty_mask("lm_tiny")(params)
  flat = {"/".join(map(str, k)): v for k, v in
          jax.tree_util.tree_flatten_with_path(mask)[0]
          for k in [[getattr(p, "key", p) for p in k]]}
  penalised = sorted(k for k, v in flat.items() if v)
  assert penalised == sorted(
      [f"blocks/{i}/attn/{m}/kernel" for i in range(2) for m in ("query", "key", "value", "out")]
      + [f"blocks/{i}/mlp/{m}/kernel" for i in range(2) for m in ("fc1", "fc2")]
      + ["head/kernel"])
  assert "token_embed/embedding" in flat and "pos_embed" in flat
  vit_mask = models.penalty_mask("vit_tiny")(nnx.to_pure_dict(nnx.state(
      models.get_model("vit_tiny", 10, input_shape=(28, 28, 1), rngs=nnx.Rngs(0)), nnx.Param)))
  assert vit_mask["patch_embed"]["kernel"] and not vit_mask["pos_embed"]
  assert models.penalty_mask("resnet20") is None  # CNNs keep the library's default


@pytest.mark.parametrize("extra", [dict(optimizer="xrda", l1=10.0),
                                   dict(optimizer="sgd", pruning="once", pruning_sparsity=0.9),
                                   dict(optimizer="rigl", dst_sparsity=0.9)])
def test_the_optimizer_zeroes_kernels_but_not_embeddings(extra):
  from train import methods
  from train.configs import default
  config = default.get_config()
  config.model = "lm_tiny"
  for key, value in extra.items():
    config[key] = value
  model = models.get_model("lm_tiny", 256, input_shape=(16,), rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tx = methods.create_optimizer(config, total_steps=10, steps_per_epoch=10)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = jax.tree.map(lambda p, u: p + u, params, updates)
  zeros = lambda x: float(jnp.mean(x == 0))
  assert zeros(new["token_embed"]["embedding"]) == 0.0
  assert zeros(new["pos_embed"]) == 0.0
  assert zeros(new["blocks"][0]["ln1"]["scale"]) == 0.0
  assert zeros(new["blocks"][0]["attn"]["query"]["kernel"]) >= 0.89  # 921 of 1,024
  assert zeros(new["blocks"][1]["mlp"]["fc1"]["kernel"]) >= 0.89


@pytest.mark.parametrize("extra", [
    dict(optimizer="sgd", pruning="once", pruning_sparsity=0.9, pruning_scope="erk"),
    dict(optimizer="rigl", dst_sparsity=0.9, dst_distribution="erk"),
    dict(optimizer="xrda", l1_sparsity=0.9, l1_sparsity_scope="erk", l1_solve_every=1)])
def test_erk_in_the_loop_reads_attention_kernels_as_matrices(extra):
  # ERK counts a dense layer's fan-in and fan-out (Evci et al., 2020): a query kernel
  # (in, heads, head_dim) is the (in, heads * head_dim) matrix, the output kernel
  # (heads, head_dim, out) the (heads * head_dim, out) one.
  import sparse_optax as so
  from train import methods
  from train.configs import default
  config = default.get_config()
  config.model = "lm_tiny"
  for key, value in extra.items():
    config[key] = value
  params = nnx.to_pure_dict(nnx.state(
      models.get_model("lm_tiny", 256, input_shape=(16,), rngs=nnx.Rngs(0)), nnx.Param))
  views = methods.attention_as_matrices(params)
  attn = params["blocks"][0]["attn"]
  assert views["blocks"][0]["attn"]["query"]["kernel"] == (
      attn["query"]["kernel"].shape[0], attn["query"]["kernel"][0].size)
  assert views["blocks"][0]["attn"]["out"]["kernel"] == (
      attn["out"]["kernel"][..., 0].size, attn["out"]["kernel"].shape[-1])
  assert views["blocks"][0]["mlp"]["fc1"]["kernel"] is None and views["pos_embed"] is None
  state = nnx.state(models.get_model("lm_tiny", 256, input_shape=(16,), rngs=nnx.Rngs(0)),
                    nnx.Param)  # the same views on an nnx.State, whose paths end in .value
  assert jax.tree.leaves(methods.attention_as_matrices(state), is_leaf=lambda x: x is None
                         or isinstance(x, tuple)) == jax.tree.leaves(
                             views, is_leaf=lambda x: x is None or isinstance(x, tuple))
  mask = models.penalty_mask("lm_tiny")(params)
  want = so.layer_densities(params, 0.9, "erk", mask, erk_shapes=views)
  tx = methods.create_optimizer(config, total_steps=10, steps_per_epoch=10)
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  new = jax.tree.map(lambda p, u: p + u, params, updates)
  for path in (("blocks", 0, "attn", "query"), ("blocks", 1, "attn", "out"),
               ("blocks", 0, "mlp", "fc1"), ("head",)):
    kernel, density = new, want
    for k in path + ("kernel",):
      kernel, density = kernel[k], density[k]
    assert float(jnp.mean(kernel != 0)) == pytest.approx(float(density), abs=2 / kernel.size)
  as_own = so.layer_densities(params, 0.9, "erk", mask)  # what three dimensions would give
  assert float(want["blocks"][0]["attn"]["query"]["kernel"]) > 1.1 * float(
      as_own["blocks"][0]["attn"]["query"]["kernel"])


def test_vit_costs_about_what_resnet20_does():
  from benchmarks import model_flops
  resnet, _ = model_flops.forward_flops("resnet20", (32, 32, 3), batch=2)
  ours, _ = model_flops.forward_flops("vit", (32, 32, 3), batch=2)
  assert 0.8 < ours / resnet < 1.25, (ours, resnet)


# ----------------------------------------------------------------------------- training


def _records(workdir):
  return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_tiny_lm_trains_through_train_main(tmp_path):
  """The LM config through ``python -m train.main``, on a tiny corpus found as raw data."""
  from tests.test_text_data import _write_corpus
  _write_corpus(tmp_path / "raw" / "shakespeare", count=10, seed=1, chars=1500)
  # 8 training files of 1,502 bytes: 93 windows, 11 steps of 8 an epoch.
  overrides = dict(model="lm_tiny", data_dir=str(tmp_path / "tfds"), num_epochs=3,
                   batch_size=8, eval_batch_size=8, progress_bar=False)
  command = [sys.executable, "-m", "train.main",
             "--config=train/configs/lm_shakespeare_xrda_cpu.py", f"--workdir={tmp_path / 'w'}",
             *(f"--config.{k}={v}" for k, v in overrides.items())]
  env = {**os.environ, "SPARSE_OPTAX_RAW_DATA": str(tmp_path / "raw"), "SPARSE_OPTAX_DOWNLOAD": "0"}
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = _records(tmp_path / "w")
  assert [r["epoch"] for r in records] == [1, 2, 3]
  assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.3
  assert records[-1]["val_perplexity"] < records[0]["val_perplexity"]
  for r in records:
    assert r["val_perplexity"] == pytest.approx(np.exp(r["val_loss"]))
    assert r["test_perplexity"] == pytest.approx(np.exp(r["test_loss"]))
  layers = records[-1]["layers"]
  for name in ("token_embed/embedding", "pos_embed", "norm/scale", "blocks/0/attn/query/bias"):
    assert layers[name]["density"] == 1.0, name  # out of the penalty
  assert layers["blocks/0/mlp/fc1/kernel"]["density"] < 1.0  # penalised


def _write_template_digits(directory: Path, counts=(("train", 256), ("test", 64))) -> None:
  """IDX files of 28×28 images: one fixed random template per label, plus noise."""
  from tests.test_prepare_data import IDX_NAMES, _write_idx
  rng = np.random.default_rng(0)
  templates = rng.integers(0, 256, (10, 28, 28))
  directory.mkdir(parents=True)
  for split, n in counts:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = 0.6 * templates[labels] + 0.4 * rng.integers(0, 256, (n, 28, 28))
    _write_idx(directory / IDX_NAMES[split][0], images.astype(np.uint8), compress=False)
    _write_idx(directory / IDX_NAMES[split][1], labels, compress=False)


def test_tiny_vit_trains_through_the_loop(tmp_path):
  """The ViT's SGD config through ``train.train_and_evaluate`` (what ``train.main`` runs) on
  tiny MNIST-format data, a noisy template per label, at a step size for 24 steps. (xrda, at
  s_0 from 0.25 to 1 and any λ, lowered this loss by under 0.05 in 24 steps: too few for it.)"""
  import importlib

  from train import input_pipeline, train
  from train.data import preparation
  _write_template_digits(tmp_path / "raw")
  preparation.prepare("mnist", tmp_path / "raw", tmp_path / "tfds")
  config = importlib.import_module("train.configs.vit_cifar10_sgd_cpu").get_config()
  config.model, config.dataset, config.data_dir = "vit_tiny", "mnist", str(tmp_path / "tfds")
  config.num_epochs, config.batch_size, config.eval_batch_size = 3, 32, 64
  config.learning_rate = 0.3
  config.progress_bar = False
  input_pipeline.clear_cache()
  try:
    final = train.train_and_evaluate(config, tmp_path / "w")
  finally:
    input_pipeline.clear_cache()
  records = _records(tmp_path / "w")
  assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.3
  assert final["test_accuracy"] > 0.5  # chance: 0.1
  assert "test_perplexity" not in final  # classification records are unchanged
