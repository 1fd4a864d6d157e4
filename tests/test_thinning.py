"""Tests of models.thinning: exact eval-mode outputs, narrower models of the same class, the
report, cheaper forward passes, errors."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models import resnet, thinning, vgg

ATOL = 1e-5


def _input_shape(name):
  if name.startswith("lm"):
    return (16,)  # a context of tokens
  return (28, 28, 1) if name.startswith("lenet") or name == "vit_tiny" else (32, 32, 3)


def _model(name, seed=0, **kwargs):
  """An eval-mode model with random weights, biases, BatchNorm scales, shifts and statistics,
  so that a dead channel's constant is not zero by accident."""
  kwargs.setdefault("input_shape", _input_shape(name))
  # Built abstractly and filled from NumPy: drawing with jax compiles once per shape.
  model = nnx.eval_shape(lambda: models.get_model(name, 10, rngs=nnx.Rngs(seed), **kwargs))
  rng = np.random.default_rng(seed)
  for path, var in nnx.to_flat_state(nnx.state(model)):
    shape = var.get_value().shape
    # U(±sqrt(3/fan_in)) kernels: linear kernels of N(0, 0.01²) would make the logits barely
    # depend on the input.
    value = {"kernel": lambda: rng.uniform(-1, 1, shape) * np.sqrt(3 / np.prod(shape[:-1])),
             "bias": lambda: 0.3 * rng.standard_normal(shape),
             "scale": lambda: 1.0 + 0.3 * rng.standard_normal(shape),
             "mean": lambda: 0.3 * rng.standard_normal(shape),
             "var": lambda: rng.uniform(0.5, 2.0, shape)}[path[-1]]()
    var.set_value(jnp.asarray(value, jnp.float32))
  model.eval()
  return model


def _set(model, path, index, value):
  """model.<path>[index] = value."""
  var = getattr(thinning._module(model, path[:-1]), path[-1])
  array = np.array(var.get_value())
  array[index] = value
  var.set_value(jnp.asarray(array))


def _kill(model, channel, constant, conv, bn=None):
  """Zeroes ``conv``'s kernel slice of output ``channel`` and sets its bias and BatchNorm so
  that the channel outputs ``constant`` before any ReLU."""
  _set(model, conv + ("kernel",), (..., channel), 0.0)
  if bn is None:
    _set(model, conv + ("bias",), channel, constant)
    return
  bias = 0.7 if thinning._module(model, conv).use_bias else 0.0
  if bias:
    _set(model, conv + ("bias",), channel, bias)
  _set(model, bn + ("mean",), channel, bias)  # bn(bias) is then the shift
  _set(model, bn + ("bias",), channel, constant)


def _num_params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _inputs(shape, seed=1, batch=4):
  return jax.random.normal(jax.random.key(seed), (batch, *shape))


@nnx.jit
def _forward(model, x):
  return model(x)


def _assert_same_outputs(model, thinned, shape):
  x = _inputs(shape)
  expected = _forward(model, x)
  assert float(jnp.std(expected)) > 1e-2  # the logits depend on the input
  np.testing.assert_allclose(_forward(thinned, x), expected, atol=ATOL, rtol=0)


def _layer(report, name):
  (row,) = [row for row in report.layers if row.name == name]
  return row


def _removed(report, name):
  row = _layer(report, name)
  return sorted(set(range(row.out_before)) - set(row.kept))


# ---------------------------------------------------------------------------------------------
# Exactness, per family, with channels killed by hand.


def test_lenet300100_dead_neurons_fold_and_unread_neurons_go():
  model = _model("lenet300100")
  _kill(model, 3, 0.5, ("layers", 0))          # relu(0.5) folds into layers.1's bias
  _kill(model, 7, -0.5, ("layers", 0))         # relu(-0.5) = 0
  _set(model, ("layers", 1, "kernel"), 10, 0.0)  # layers.1 never reads neuron 10
  _kill(model, 5, 0.7, ("layers", 1))          # folds into the classifier's bias
  thinned, report = models.thin(model)
  assert type(thinned) is models.LeNet300100
  assert _removed(report, "layers.0") == [3, 7, 10]
  assert _removed(report, "layers.1") == [5]
  assert _removed(report, "layers.2") == []
  assert [layer.kernel.shape for layer in thinned.layers] == [(784, 297), (297, 99), (99, 10)]
  _assert_same_outputs(model, thinned, (28, 28, 1))


def test_fold_is_needed_for_a_dead_neuron_with_a_non_zero_output():
  # Dropping neuron 3 (relu(0.5) = 0.5) without folding would change the logits: the fold in
  # the test above is what keeps them equal.
  model = _model("lenet300100_tiny", input_shape=(8, 8, 1))
  _kill(model, 3, 0.5, ("layers", 0))
  x = _inputs((8, 8, 1))
  expected = model(x)
  thinned, report = models.thin(model)
  assert _removed(report, "layers.0") == [3]
  np.testing.assert_allclose(thinned(x), expected, atol=ATOL, rtol=0)
  _set(model, ("layers", 1, "kernel"), 3, 0.0)  # unfolded removal
  assert float(jnp.max(jnp.abs(model(x) - expected))) > 1e-3


def test_lenet5_conv_channels_fold_through_pooling_and_flatten():
  model = _model("lenet5")
  # No ReLU after LeNet-5's convs: a dead channel outputs its bias, negative or not, and
  # both following layers (a VALID conv, a linear layer) see it everywhere.
  _kill(model, 0, 0.5, ("conv1",))
  _kill(model, 4, -0.3, ("conv1",))
  _set(model, ("conv2", "kernel"), (..., 9, slice(None)), 0.0)  # conv1's channel 9 unread
  _kill(model, 2, 0.4, ("conv2",))  # folds into fc1 (800 rows)
  _set(model, ("fc1", "kernel"), slice(11, None, 50), 0.0)  # conv2's channel 11 unread
  _kill(model, 100, 0.2, ("fc1",))
  _kill(model, 200, -0.2, ("fc1",))
  thinned, report = models.thin(model)
  assert type(thinned) is models.LeNet5
  assert _removed(report, "conv1") == [0, 4, 9]
  assert _removed(report, "conv2") == [2, 11]
  assert _removed(report, "fc1") == [100, 200]
  assert thinned.conv2.kernel.shape == (5, 5, 17, 48)
  assert thinned.fc1.kernel.shape == (16 * 48, 498)
  _assert_same_outputs(model, thinned, (28, 28, 1))


def _vgg_tiny_cases():
  model = _model("vgg_tiny")
  conv0, bn0 = ("stages", 0, 0, "conv"), ("stages", 0, 0, "bn")
  conv1, bn1 = ("stages", 1, 0, "conv"), ("stages", 1, 0, "bn")
  _kill(model, 1, 1.0, conv0, bn0)   # c = 1 behind a SAME conv: stays
  _kill(model, 2, -1.0, conv0, bn0)  # c = 0: goes
  _set(model, bn0 + ("scale",), 3, 0.0)  # BatchNorm outputs its shift -0.2, c = 0: goes
  _set(model, bn0 + ("bias",), 3, -0.2)
  _set(model, bn0 + ("scale",), 4, 0.0)  # ... shift 0.2, c = 0.2: stays
  _set(model, bn0 + ("bias",), 4, 0.2)
  _set(model, conv1 + ("kernel",), (..., 5, slice(None)), 0.0)  # unread (kernel mode): goes
  _kill(model, 6, 1.0, conv1, bn1)   # c = 1, the mean sees it everywhere: folds
  _kill(model, 7, -1.0, conv1, bn1)
  _set(model, ("classifier", "kernel"), 8, 0.0)
  return model


def test_vgg_same_padding_keeps_dead_channels_with_non_zero_output():
  model = _vgg_tiny_cases()
  thinned, report = models.thin(model)
  assert type(thinned) is vgg.VGG
  assert _removed(report, "stages.0.0.conv") == [2, 3, 5]
  assert _removed(report, "stages.1.0.conv") == [6, 7, 8]
  assert thinned.stages[0][0].conv.kernel.shape == (3, 3, 3, 5)
  assert thinned.stages[1][0].conv.kernel.shape == (3, 3, 5, 13)
  assert thinned.classifier.kernel.shape == (13, 10)
  assert thinned.stages[1][0].bn.use_running_average  # returned in eval mode
  _assert_same_outputs(model, thinned, (32, 32, 3))


def test_folding_behind_same_padding_would_not_be_exact():
  # Channel 1 of vgg_tiny's first conv outputs c = 1 everywhere. Folding it into the next
  # conv's bias (what a VALID conv would allow) misses the zero padding at the border.
  model = _vgg_tiny_cases()
  x = _inputs((32, 32, 3))
  expected = model(x)
  conv = model.stages[1][0].conv
  kernel = np.array(conv.kernel.get_value())
  conv.bias.set_value(conv.bias.get_value() + kernel[:, :, 1, :].sum(axis=(0, 1)))
  kernel[:, :, 1, :] = 0.0
  conv.kernel.set_value(jnp.asarray(kernel))
  assert float(jnp.max(jnp.abs(model(x) - expected))) > 1e-3


def test_vgg_small_across_max_pools():
  model = _model("vgg_small")
  stage = lambda i, j: (("stages", i, j, "conv"), ("stages", i, j, "bn"))  # noqa: E731
  _kill(model, 0, -0.5, *stage(0, 0))  # before a max-pool: c = 0 goes
  _kill(model, 1, 0.5, *stage(0, 0))   # stays
  _kill(model, 3, -0.5, *stage(1, 0))
  _kill(model, 4, 0.5, *stage(1, 1))   # max-pool then a SAME conv: stays
  _set(model, stage(2, 0)[0] + ("kernel",), (..., 7, slice(None)), 0.0)  # (1, 1)'s 7 unread
  _kill(model, 9, 0.5, *stage(2, 1))   # last conv: folds into the classifier
  thinned, report = models.thin(model)
  assert _removed(report, "stages.0.0.conv") == [0]
  assert _removed(report, "stages.1.0.conv") == [3]
  assert _removed(report, "stages.1.1.conv") == [7]
  assert _removed(report, "stages.2.0.conv") == []
  assert _removed(report, "stages.2.1.conv") == [9]
  assert [[layer.conv.kernel.shape[-1] for layer in s] for s in thinned.stages] == [
      [31], [63, 63], [128, 127]]
  _assert_same_outputs(model, thinned, (32, 32, 3))


@pytest.mark.parametrize("name,kwargs", [
    ("resnet_tiny", {}),
    ("resnet_tiny", {"shortcut": "projection"}),  # shaped like ResNet-18
    ("resnet20", {}),
])
def test_resnet_thins_only_inside_blocks(name, kwargs):
  model = _model(name, **kwargs)
  block = lambda i, n: (("blocks", i, f"conv{n}"), ("blocks", i, f"bn{n}"))  # noqa: E731
  _kill(model, 1, 0.5, *block(0, 1))   # c > 0 behind a padded conv: stays
  _kill(model, 2, -0.5, *block(0, 1))  # c = 0: goes
  _set(model, block(0, 2)[0] + ("kernel",), (..., 3, slice(None)), 0.0)  # unread: goes
  _set(model, block(1, 1)[1] + ("scale",), 4, 0.0)
  _set(model, block(1, 1)[1] + ("bias",), 4, -0.1)  # BatchNorm outputs -0.1, c = 0: goes
  # Dead block outputs and stem channels are added to a shortcut: they stay.
  _kill(model, 0, -0.5, *block(0, 2))
  _kill(model, 5, -0.5, ("stem",), ("stem_bn",))
  _set(model, ("classifier", "kernel"), 6, 0.0)
  thinned, report = models.thin(model)
  assert type(thinned) is resnet.ResNet
  assert _removed(report, "blocks.0.conv1") == [2, 3]
  assert _removed(report, "blocks.1.conv1") == [4]
  assert thinned.blocks[0].conv1.kernel.shape[-1] == thinned.blocks[0].conv2.kernel.shape[-2]
  for row in report.layers:
    if not row.name.endswith("conv1"):
      assert row.out_after == row.out_before, row.name
  assert thinned.blocks[1].use_projection == model.blocks[1].use_projection
  _assert_same_outputs(model, thinned, (32, 32, 3))


def test_resnet_block_features_narrow_the_inner_layer():
  model = nnx.eval_shape(lambda: models.ResNetTiny(10, block_features=(3, 5), rngs=nnx.Rngs(0)))
  assert model.blocks[0].conv1.kernel.shape == (3, 3, 8, 3)
  assert model.blocks[1].conv2.kernel.shape == (3, 3, 5, 16)
  assert model.blocks[1].bn1.scale.shape == (5,)
  with pytest.raises(ValueError, match="block_features has 3 widths.*2 blocks"):
    models.ResNetTiny(10, block_features=(3, 5, 7), rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------
# Cascades, limits, random sparsity.


def test_removals_cascade_forwards_and_backwards():
  model = _model("lenet300100_tiny", input_shape=(8, 8, 1))
  # Forwards: layers.1's neuron 0 reads only dead neurons 0 and 1 (outputs 0.5, 0.4); their
  # fold leaves it dead with a constant output, which folds into the classifier.
  _kill(model, 0, 0.5, ("layers", 0))
  _kill(model, 1, 0.4, ("layers", 0))
  _set(model, ("layers", 1, "kernel"), (slice(2, None), 0), 0.0)
  # Backwards: layers.1's neuron 3 is unread, and neuron 5 of layers.0 is read only by it.
  _set(model, ("layers", 2, "kernel"), 3, 0.0)
  _set(model, ("layers", 1, "kernel"), (5, [i for i in range(16) if i != 3]), 0.0)
  thinned, report = models.thin(model)
  assert _removed(report, "layers.0") == [0, 1, 5]
  assert _removed(report, "layers.1") == [0, 3]
  _assert_same_outputs(model, thinned, (8, 8, 1))
  again, report2 = models.thin(thinned)  # nothing is left to remove
  assert report2.params_after == report2.params_before == report.params_after
  _assert_same_outputs(thinned, again, (8, 8, 1))


@pytest.mark.parametrize("constant", [0.5, -0.5])
def test_a_layer_keeps_one_channel(constant):
  model = _model("vgg_tiny")
  for channel in range(16):  # every channel of the last conv is dead
    _kill(model, channel, constant, ("stages", 1, 0, "conv"), ("stages", 1, 0, "bn"))
  thinned, report = models.thin(model)
  assert _layer(report, "stages.1.0.conv").kept == (0,)
  x = _inputs((32, 32, 3))
  np.testing.assert_allclose(thinned(x), model(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name,input_shape,sparsity", [
    ("lenet300100_tiny", (8, 8, 1), 0.9),
    ("lenet5_tiny", (16, 16, 1), 0.8),
    ("vgg_tiny", (16, 16, 3), 0.9),
    ("resnet_tiny", (16, 16, 3), 0.97),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_unstructured_sparsity_that_kills_whole_channels(name, input_shape, sparsity, seed):
  model = _model(name, seed, input_shape=input_shape)
  rng = np.random.default_rng(seed)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    value = np.array(var.get_value())
    if path[-1] == "kernel":
      value[rng.random(value.shape) < sparsity] = 0.0
    elif path[-1] == "bias" and "bn" in str(path[-2]):
      value -= 0.5  # more dead channels with c = 0
    var.set_value(jnp.asarray(value))
  thinned, report = models.thin(model)
  assert report.params_after < report.params_before
  assert _num_params(thinned) == report.params_after
  x = _inputs(input_shape)
  np.testing.assert_allclose(thinned(x), model(x), atol=ATOL, rtol=0)


def test_every_registered_model_is_supported():
  # Constant non-zero weights: nothing is dead or unread, so nothing goes.
  for name in sorted(models.MODELS):
    model = nnx.eval_shape(lambda: models.get_model(  # noqa: B023
        name, 10, input_shape=_input_shape(name), rngs=nnx.Rngs(0)))
    for _, var in nnx.to_flat_state(nnx.state(model)):
      var.set_value(jnp.full(var.get_value().shape, 0.01, jnp.float32))
    thinned, report = models.thin(model)
    assert type(thinned) is type(model), name
    assert report.params_after == report.params_before == _num_params(model), name
    assert all(row.kept == tuple(range(row.out_before)) for row in report.layers), name
    assert all(a.kept == tuple(range(a.heads_before)) for a in report.heads), name


# ---------------------------------------------------------------------------------------------
# The report, the cost.


def test_report_counts():
  model = _model("lenet300100")
  for neuron in (3, 7, 10):
    _kill(model, neuron, 0.5, ("layers", 0))
  _kill(model, 5, 0.5, ("layers", 1))
  thinned, report = models.thin(model)
  rows = [(r.name, r.in_before, r.in_after, r.out_before, r.out_after, r.params_before,
           r.params_after) for r in report.layers]
  assert rows == [
      ("layers.0", 784, 784, 300, 297, 300 * 785, 297 * 785),
      ("layers.1", 300, 297, 100, 99, 300 * 100 + 100, 297 * 99 + 99),
      ("layers.2", 100, 99, 10, 10, 100 * 10 + 10, 99 * 10 + 10),
  ]
  assert report.params_before == 266_610 == _num_params(model)
  assert report.params_after == 297 * 785 + 297 * 99 + 99 + 99 * 10 + 10 == _num_params(thinned)
  assert sum(r.params_after for r in report.layers) == report.params_after
  text = str(report)
  assert "layers.1" in text and "300 -> 297" in text and "266,610 -> 263,647" in text


def test_report_counts_batchnorm_parameters():
  model = _vgg_tiny_cases()
  thinned, report = models.thin(model)
  first = _layer(report, "stages.0.0.conv")
  assert (first.params_before, first.params_after) == (3 * 3 * 3 * 8 + 3 * 8, 3 * 3 * 3 * 5 + 3 * 5)
  assert sum(r.params_before for r in report.layers) == report.params_before == _num_params(model)
  assert sum(r.params_after for r in report.layers) == report.params_after == _num_params(thinned)
  stats = sum(x.size for x in jax.tree.leaves(nnx.state(thinned, nnx.BatchStat)))
  assert stats == 2 * (5 + 13)


def _flops(model, shape):
  # Compiled for the CPU: XLA's GPU cost analysis leaves cuDNN convolutions uncounted (-1).
  cpu = jax.devices("cpu")[0]
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
  args = jax.device_put((state, jnp.zeros((1, *shape))), cpu)
  cost = forward.lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_thinned_vgg_costs_fewer_flops():
  model = _vgg_tiny_cases()
  thinned, _ = models.thin(model)

  def macs(c0, c1):  # 3×3 convs on 32×32 then (after a max-pool) 16×16, then the classifier
    return 32 * 32 * 9 * 3 * c0 + 16 * 16 * 9 * c0 * c1 + c1 * 10

  before, after = _flops(model, (32, 32, 3)), _flops(thinned, (32, 32, 3))
  # The convs' multiply-adds dominate; BatchNorm, ReLU and pooling add a few percent.
  assert after / before == pytest.approx(macs(5, 13) / macs(8, 16), rel=0.05)
  assert after < 0.6 * before


def test_thinned_lenet300100_costs_fewer_flops():
  model = _model("lenet300100")
  for neuron in range(150):
    _kill(model, neuron, -1.0, ("layers", 0))
  thinned, report = models.thin(model)
  assert report.params_after == 150 * 785 + 150 * 100 + 100 + 1010
  before, after = _flops(model, (28, 28, 1)), _flops(thinned, (28, 28, 1))
  assert after / before == pytest.approx(
      (784 * 150 + 150 * 100 + 1000) / (784 * 300 + 300 * 100 + 1000), rel=0.02)


# ---------------------------------------------------------------------------------------------
# Params from the training state, and bad input.


def test_params_and_batch_stats_from_a_training_state():
  model = _model("vgg_tiny")
  params = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  batch_stats = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
  params["stages"][1][0]["conv"]["kernel"][..., 2] = 0.0
  params["stages"][1][0]["bn"]["bias"][2] = -1.0
  batch_stats["stages"][1][0]["bn"]["mean"][2] = params["stages"][1][0]["conv"]["bias"][2]
  own = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model)))
  # Checkpoints restore nnx.List indices as strings.
  restored = {"stages": {str(i): {str(j): layer for j, layer in stage.items()}
                         for i, stage in params["stages"].items()},
              "classifier": params["classifier"]}
  for given in (params, restored, nnx.state(_with(model, params, batch_stats), nnx.Param)):
    thinned, report = models.thin(model, given, batch_stats)
    assert _removed(report, "stages.1.0.conv") == [2]
    _assert_same_outputs(_with(model, params, batch_stats), thinned, (32, 32, 3))
  # The model itself is left as it was.
  jax.tree.map(np.testing.assert_array_equal, own,
               jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model))))


def _with(model, params, batch_stats):
  copy = nnx.clone(model)
  state = nnx.state(copy)
  nnx.replace_by_pure_dict(state, _merge(params, batch_stats))
  nnx.update(copy, state)
  return copy


def _merge(a, b):
  out = dict(a)
  for key, value in b.items():
    out[key] = _merge(a[key], value) if isinstance(value, dict) else value
  return out


def test_unsupported_models():
  with pytest.raises(TypeError, match="unsupported model Linear; it thins LeNet300100, LeNet5"):
    models.thin(nnx.eval_shape(lambda: nnx.Linear(3, 4, rngs=nnx.Rngs(0))))

  class WiderVGG(vgg.VGG):
    pass

  with pytest.raises(TypeError, match="unsupported model WiderVGG"):
    models.thin(nnx.eval_shape(lambda: WiderVGG(10, stages=((4,),), rngs=nnx.Rngs(0))))


def test_params_that_do_not_match_the_model():
  model = _model("vgg_tiny")
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  batch_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  other = nnx.to_pure_dict(nnx.state(_model("lenet5_tiny", input_shape=(16, 16, 1)), nnx.Param))
  with pytest.raises(ValueError, match="params do not match the VGG model: 'conv1/bias' is not "
                                       "one of its params"):
    models.thin(model, other)
  wrong = _merge(params, {"classifier": {"kernel": np.zeros((16, 7), np.float32)}})
  with pytest.raises(ValueError, match=r"'classifier/kernel' has shape \(16, 7\), the model's "
                                       r"has \(16, 10\)"):
    models.thin(model, wrong)
  missing = _merge(params, {"classifier": {"kernel": params["classifier"]["kernel"]}})
  del missing["classifier"]["bias"]
  with pytest.raises(ValueError, match="params do not match the VGG model: 'classifier/bias' is "
                                       "missing"):
    models.thin(model, missing)
  del batch_stats["stages"][0][0]["bn"]["var"]
  with pytest.raises(ValueError, match="batch_stats do not match the VGG model: "
                                       "'stages/0/0/bn/var' is missing"):
    models.thin(model, None, batch_stats)
  with pytest.raises(TypeError, match="params must be a nested dict"):
    models.thin(model, [1, 2])
  listed = _merge(params, {"classifier": {"bias": [0.0] * 10}})
  with pytest.raises(TypeError, match="'classifier/bias' is a list, not an array"):
    models.thin(model, listed)


def test_traced_params_are_refused():
  model = _model("lenet300100_tiny", input_shape=(8, 8, 1))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  with pytest.raises(TypeError, match="is traced.*outside jax.jit"):
    jax.jit(lambda p: models.thin(model, p)[1].params_after)(params)


def test_docstrings():
  result = doctest.testmod(thinning, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0


def test_xla_counts_two_flops_per_multiply_add():
  # Checks _flops' unit (2 flops per multiply-add) that the FLOPs tests above rely on.
  conv = nnx.Conv(4, 6, (3, 3), padding="VALID", use_bias=False, rngs=nnx.Rngs(0))
  assert _flops(conv, (10, 10, 4)) == pytest.approx(2 * 8 * 8 * 9 * 4 * 6, rel=0.01)
