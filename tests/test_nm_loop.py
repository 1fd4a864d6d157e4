"""N:M sparsity in the training loop and in export: ``config.nm_pattern`` through
train.methods on the models, bad patterns refused, and N:M kernels exported compressed with the
pattern checked on every leaf (the library's own checks: tests/test_nm.py)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so



# ---------------------------------------------------------------------------------------------
# The training loop: config.nm_pattern through train.methods.


def _model_params(name):
  import models
  from flax import nnx
  shape = {"vgg_tiny": (32, 32, 3), "vit_tiny": (28, 28, 1)}.get(name)
  kwargs = {} if shape is None else {"input_shape": shape}
  model = models.get_model(name, 10, rngs=nnx.Rngs(0), **kwargs)
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_loop_axes_name_each_kernels_input_and_leave_out_what_does_not_divide():
  from train import methods
  import models
  axes = methods.nm_pattern_axes("2:4", models.penalty_mask("vit_tiny"))(_model_params("vit_tiny"))
  flat = {"/".join(map(str, k)): v for k, v in
          [([getattr(p, "key", getattr(p, "idx", p)) for p in path], a) for path, a in
           jax.tree_util.tree_flatten_with_path(
               axes, is_leaf=lambda x: x is None or isinstance(x, tuple))[0]]}
  attn = [k for k in flat if "/attn/" in k and k.endswith("kernel")]
  assert attn, flat
  for k in attn:
    assert flat[k] == ((0, 1) if "/out/" in k else 0), (k, flat[k])
  assert all(flat[k] is None for k in flat if not k.endswith("kernel"))  # biases, norms, embeddings
  lenet5 = methods.nm_pattern_axes("2:4")(_model_params("lenet5_tiny"))
  assert lenet5["conv1"]["kernel"] is None  # 1 input channel: dense, as ASP leaves it
  assert lenet5["conv2"]["kernel"] == 2  # HWIO's I axis


@pytest.mark.parametrize("model", ["vgg_tiny", "vit_tiny", "lm_tiny"])
@pytest.mark.parametrize("optimizer,pruning", [("xrda", "none"), ("rda", "none"),
                                               ("prox_sgd", "none"), ("sgd", "gradual")])
def test_loop_optimizer_holds_the_pattern_after_every_step(model, optimizer, pruning):
  from train import configuration, methods
  from train.configs import default
  config = default.get_config()
  config.model, config.optimizer, config.pruning = model, optimizer, pruning
  config.nm_pattern, config.l1 = "2:4", 1e-4
  config.pruning_begin_epoch, config.pruning_end_epoch, config.pruning_frequency = 0, 1, 1
  config.pruning_sparsity = 0.6
  config.dataset = "cifar10" if model == "vgg_tiny" else config.dataset
  configuration.validate_config(config)
  params = _model_params(model)
  tx = methods.create_optimizer(config, total_steps=4, steps_per_epoch=2)
  mask = methods.penalised(config).get("mask")
  axes = methods.nm_pattern_axes("2:4", mask)
  state = tx.init(params)

  @jax.jit
  def step(p, s, i):
    grads = jax.tree.map(lambda x: jnp.cos(x + i), p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  # A kernel the pattern cannot hold (a first conv on 3 channels, the ViT's patch embedding)
  # stays dense, out of the penalty and the pruning alike.
  import models
  every = methods.nm_pattern_axes("2:4", models.penalty_mask(model))(params)
  is_axes = lambda x: x is None or isinstance(x, (int, tuple))  # noqa: E731
  left_out = [k for k, (a, x) in enumerate(zip(
      jax.tree.leaves(axes(params), is_leaf=is_axes), jax.tree.leaves(params)))
      if a is None and x.ndim == 4]
  assert (model != "lm_tiny") == bool(left_out), model
  for i in range(3):
    params, state = step(params, state, i)
    assert so.nm_violations(params, "2:4", axes=axes, mask=mask) == {}, (model, optimizer, i)
    assert all(np.all(np.asarray(jax.tree.leaves(params)[k]) != 0) for k in left_out), i
  patterned = [a for a in jax.tree.leaves(axes(params), is_leaf=is_axes) if a is not None]
  assert len(patterned) >= 2  # the pattern is held somewhere, not left out everywhere
  assert len(patterned) == len([a for a in jax.tree.leaves(every, is_leaf=is_axes)
                                if a is not None])


@pytest.mark.parametrize("value,match", [
    ("4:2", "1 <= N <= M"), ("2/4", "'N:M'"), ("0:4", "1 <= N <= M")])
def test_loop_refuses_bad_patterns(value, match):
  from train import configuration
  from train.configs import default
  config = default.get_config()
  config.nm_pattern = value
  with pytest.raises(ValueError, match=match):
    configuration.validate_config(config)


@pytest.mark.parametrize("optimizer", ["rigl", "set", "sgd", "lobster"])
def test_loop_refuses_a_pattern_no_step_holds(optimizer):
  from train import configuration
  from train.configs import default
  config = default.get_config()
  config.optimizer, config.nm_pattern = optimizer, "2:4"
  config.validation_split = "train[:10]"
  with pytest.raises(ValueError, match="nm_pattern is held by the prox of"):
    configuration.validate_config(config)
  config.pruning, config.pruning_end_epoch = "gradual", 1  # pruning holds it
  configuration.validate_config(config)


def test_runs_saved_before_the_field_resume_without_a_pattern():
  from train import checkpointing
  from train.configs import default
  assert checkpointing.ADDED_FIELDS["nm_pattern"] is None == default.get_config().nm_pattern


# ---------------------------------------------------------------------------------------------
# Export: N:M kernels stored as values and positions, the pattern checked on every leaf.

from tests.test_export import _model as _export_model  # noqa: E402
from tests.test_export import _write_run, data_dir  # noqa: E402,F401  (a fixture)


def _nm_model(name):
  """test_export's model (a ViT as initialised, in eval mode) with every kernel the loop
  patterns cut to 2:4 by magnitude."""
  import models
  from flax import nnx
  from train import methods
  if name.startswith("vit"):
    model = models.get_model(name, 10, input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
    model.eval()
  else:
    model = _export_model(name)
  state = nnx.state(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  axes = methods.nm_pattern_axes("2:4", models.penalty_mask(name))(params)
  params = jax.tree.map(lambda x, a: x if a is None else jnp.where(
      so.nm_mask(x, "2:4", axes=a), x, 0), params, axes,
      is_leaf=lambda x: x is None or isinstance(x, tuple))
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model


def _nm_run(tmp_path, data_dir, name, model):  # noqa: F811
  import json
  workdir = _write_run(tmp_path / "run", model, data_dir, name)
  config = json.loads((workdir / "config.json").read_text())
  (workdir / "config.json").write_text(json.dumps({**config, "nm_pattern": "2:4"}))
  return workdir


@pytest.mark.parametrize("name", ["lenet300100_tiny", "lenet5_tiny", "vit_tiny"])
def test_export_nm_round_trip_equals_the_model_and_bytes_match(tmp_path, data_dir, name):  # noqa: F811
  from train import export
  model = _nm_model(name)
  workdir = _nm_run(tmp_path, data_dir, name, model)
  report = export.export(workdir, "nm", platforms=("cpu",), latency_calls=0)
  x = jax.random.normal(jax.random.key(1), (5, 28, 28, 1))
  np.testing.assert_allclose(export.load(workdir / "export")(x), model(x), atol=1e-5, rtol=0)
  assert report["flipped_predictions"] == 0
  assert report["nm_pattern"] == "2:4"
  rows = {row["name"]: row for row in report["layers"]}
  nm_rows = [row for row in rows.values() if row["stored"] == "nm"]
  assert nm_rows and report["nm_checked_leaves"] == len(nm_rows)
  for row in rows.values():
    size = int(np.prod(row["kernel_before"]))
    if row["stored"] == "nm":  # float32 values of half the weights, one uint8 each
      assert row["compact_bytes"] == size // 2 * (4 + 1), row
      assert row["index_dtype"] == "uint8" and row["kernel_after"] == row["kernel_before"]
    else:
      assert row["compact_bytes"] == row["dense_bytes"] == 4 * size, row
  if name == "lenet5_tiny":
    assert rows["conv1"]["stored"] == "dense"  # 1 input channel: no groups of 4
    assert rows["conv2"]["stored"] == "nm"
  if name == "vit_tiny":  # q, k, v and out of both blocks, and the MLPs
    attention = [row for row in rows.values() if row["kind"] == "attention"]
    assert len(attention) == 8 and all(row["stored"] == "nm" for row in attention), attention
    out = next(row for row in attention if row["name"].endswith("attn.out"))
    tokens = 16  # patches of 7x7
    assert out["flops_dense"] == tokens * int(np.prod(out["kernel_before"]))
  saved = sum(row["dense_bytes"] - row["compact_bytes"] for row in rows.values())
  assert report["dense_bytes"] - report["compact_bytes"] == saved
  with np.load(workdir / "export" / "weights.npz") as npz:
    assert sum(npz[k].nbytes for k in npz.files) == report["compact_bytes"] + sum(
        npz[k].nbytes for k in npz.files if "batch" in k or k.endswith(("mean", "var")))


def test_export_refuses_a_leaf_that_breaks_the_declared_pattern(tmp_path, data_dir):  # noqa: F811
  from train import export
  model = _nm_model("lenet300100_tiny")
  kernel = model.layers[1].kernel
  kernel.set_value(kernel.get_value().at[0:4, 3].set(1.0))  # a group of 4 non-zeros
  workdir = _nm_run(tmp_path, data_dir, "lenet300100_tiny", model)
  for fmt in ("nm", "auto"):
    with pytest.raises(ValueError, match=r"layers/1/kernel \(1 groups\).*Refusing to export"):
      export.export(workdir, fmt, platforms=("cpu",), evaluate=False, latency_calls=0)


def test_export_nm_needs_a_declared_pattern(tmp_path, data_dir):  # noqa: F811
  from train import export
  workdir = _write_run(tmp_path / "run", _nm_model("lenet300100_tiny"), data_dir,
                       "lenet300100_tiny")
  with pytest.raises(ValueError, match="trained without one"):
    export.export(workdir, "nm", platforms=("cpu",), evaluate=False, latency_calls=0)


def test_train_then_export_a_2_4_run(tmp_path):
  """train.main's loop with config.nm_pattern (4 steps of a tiny LeNet-300-100), its checkpoint
  2:4 on every patterned leaf, exported as 'nm' with the restored model's logits."""
  from tests.test_train import _latest_checkpoint, _run
  from train import export, methods, run_folder
  workdir = tmp_path / "run"
  _run(workdir, model="lenet300100_tiny", dataset="mnist", num_epochs=1, nm_pattern="2:4",
       optimizer="xrda", l1=1e-4)
  _, state = _latest_checkpoint(workdir)
  axes = methods.nm_pattern_axes("2:4")
  assert so.nm_violations(state["params"], "2:4", axes=axes) == {}
  assert sum(a is not None for a in jax.tree.leaves(
      axes(state["params"]), is_leaf=lambda x: x is None)) == 3  # every kernel
  report = export.export(workdir, "nm", platforms=("cpu",), evaluate=False, latency_calls=0)
  assert [row["stored"] for row in report["layers"]] == ["nm"] * 3
  _, _, model = run_folder.restore(workdir)
  x = jax.random.normal(jax.random.key(2), (3, 28, 28, 1))
  np.testing.assert_allclose(export.load(workdir / "export")(x), model(x), atol=1e-5, rtol=0)
