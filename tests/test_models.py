"""Tests of models/: parameter counts, shapes, initialisation, BatchNorm modes."""

import doctest
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models import initializers, lenet, resnet, vgg


@pytest.fixture(scope="module")
def lenet5():
  return models.get_model("lenet5", 10, rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def resnet20():
  return models.get_model("resnet20", 10, rngs=nnx.Rngs(0))


def _abstract(name, num_classes=10, **kwargs):
  return nnx.eval_shape(lambda: models.get_model(name, num_classes, rngs=nnx.Rngs(0), **kwargs))


def _num_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# name, num_classes, input_shape, exact count, (published rounding, digits)
PARAM_COUNTS = [
    ("lenet300100", 10, (28, 28, 1), 266_610, None),
    ("lenet5", 10, (28, 28, 1), 431_080, None),
    ("vgg11", 10, (32, 32, 3), 9_231_114, None),
    ("vgg16", 10, (32, 32, 3), 14_728_266, (14.73e6, 2)),
    ("vgg19", 10, (32, 32, 3), 20_040_522, (20.04e6, 2)),
    ("vgg19", 100, (32, 32, 3), 20_086_692, (20.09e6, 2)),
    ("resnet18", 10, (32, 32, 3), 11_173_962, (11.17e6, 2)),
    ("resnet20", 10, (32, 32, 3), 269_722, (0.27e6, 2)),
    ("resnet32", 10, (32, 32, 3), 464_154, (0.46e6, 2)),
    ("resnet56", 10, (32, 32, 3), 853_018, (0.85e6, 2)),
]


@pytest.mark.parametrize("name,num_classes,input_shape,expected,published", PARAM_COUNTS)
def test_parameter_count(name, num_classes, input_shape, expected, published):
  model = _abstract(name, num_classes, input_shape=input_shape)
  count = _num_params(model)
  assert count == expected
  if published is not None:
    value, digits = published
    assert round(count / 1e6, digits) == round(value / 1e6, digits)


def test_resnet56_is_option_a():
  # The paper's table lists ResNet-56 with 853K parameters: zero-padding shortcuts.
  # 1×1 projections would add 2,752 parameters (855,770 ≈ 0.86M).
  projection = nnx.eval_shape(lambda: resnet.ResNet56(10, shortcut="projection", rngs=nnx.Rngs(0)))
  assert _num_params(projection) == 855_770


def test_batch_stats_not_counted_as_params():
  model = _abstract("vgg16")
  stats = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
  assert stats == 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_output_shape(name):
  input_shape = (28, 28, 1) if name.startswith("lenet") else (32, 32, 3)

  def forward():
    model = models.get_model(name, 7, input_shape=input_shape, rngs=nnx.Rngs(0))
    return model(jnp.zeros((3, *input_shape)))

  out = nnx.eval_shape(forward)
  assert out.shape == (3, 7)
  assert out.dtype == jnp.float32


@pytest.mark.parametrize("name,input_shape", [
    ("lenet300100_tiny", (8, 8, 3)),
    ("lenet5_tiny", (20, 20, 1)),
    ("vgg_tiny", (8, 8, 1)),
])
def test_tiny_models_accept_other_input_shapes(name, input_shape):
  def forward():
    model = models.get_model(name, 4, input_shape=input_shape, rngs=nnx.Rngs(0))
    return model(jnp.ones((2, *input_shape)))

  assert nnx.eval_shape(forward).shape == (2, 4)


def test_resnet_shortcuts(resnet20):
  assert not resnet20.blocks[3].use_projection  # zero-pad (option A)
  assert resnet20.blocks[3].conv1.kernel.shape == (3, 3, 16, 32)
  projection = nnx.eval_shape(lambda: resnet.ResNetTiny(3, shortcut="projection", rngs=nnx.Rngs(0)))
  assert projection.blocks[1].use_projection
  assert projection.blocks[1].projection.kernel.shape == (1, 1, 8, 16)
  assert not projection.blocks[0].use_projection


def test_zero_pad_shortcut_is_subsample_and_zero_channels():
  block = resnet.BasicBlock(2, 4, 2, shortcut="zero_pad",
                            kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(0), (1, 4, 4, 2))  # non-negative: relu(x) == x
  out = block(x)  # convs are zero, so the block is relu(shortcut(x))
  np.testing.assert_allclose(out[..., 1:3], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(out[..., 0], 0.0)
  np.testing.assert_array_equal(out[..., 3], 0.0)


def test_lenet5_is_caffe_layout(lenet5):
  model = lenet5
  assert model.conv1.kernel.shape == (5, 5, 1, 20)  # HWIO
  assert model.conv2.kernel.shape == (5, 5, 20, 50)
  assert model.fc1.kernel.shape == (800, 500)
  assert model.fc2.kernel.shape == (500, 10)


def test_vgg16_layout():
  model = _abstract("vgg16")
  convs = [layer.conv.kernel.shape for stage in model.stages for layer in stage]
  assert len(convs) == 13
  assert convs[0] == (3, 3, 3, 64) and convs[-1] == (3, 3, 512, 512)
  assert model.classifier.kernel.shape == (512, 10)  # one linear layer


def _kernels(model):
  """(path, array) of every conv/linear kernel."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  return [(path, var.get_value()) for path, var in flat if path[-1] == "kernel"]


def test_normal_init_statistics(lenet5, resnet20):
  model = resnet20
  checked = 0
  for path, kernel in _kernels(model):
    if kernel.ndim == 4 and kernel.size >= 9_000:
      fan_in = math.prod(kernel.shape[:-1])
      expected = math.sqrt(2.0 / fan_in)
      assert abs(float(jnp.std(kernel)) / expected - 1) < 0.05, path
      assert abs(float(jnp.mean(kernel))) < 0.05 * expected, path
      checked += 1
  assert checked >= 10
  # Untruncated normal: some draws beyond 2σ (a truncated normal has none).
  big = model.blocks[-1].conv2.kernel.get_value()
  assert float(jnp.max(jnp.abs(big))) > 3 * math.sqrt(2.0 / (9 * 64))

  assert abs(float(jnp.std(lenet5.fc1.kernel.get_value())) / 0.01 - 1) < 0.02
  assert abs(float(jnp.std(lenet5.conv2.kernel.get_value())) / math.sqrt(2 / 500) - 1) < 0.03


def test_biases_zero_and_batchnorm_identity(lenet5, resnet20):
  for model in (lenet5, resnet20):
    _check_biases_and_batchnorm(model)


def _check_biases_and_batchnorm(model):
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    value = var.get_value()
    if path[-1] == "bias":
      np.testing.assert_array_equal(value, 0.0)
    elif path[-1] == "scale":
      np.testing.assert_array_equal(value, 1.0)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.BatchStat)):
    np.testing.assert_array_equal(var.get_value(), 0.0 if path[-1] == "mean" else 1.0)


def test_uniform_init_and_scale():
  model = models.get_model("lenet5", 10, init="uniform", rngs=nnx.Rngs(0))
  for _, kernel in _kernels(model):
    fan_in = math.prod(kernel.shape[:-1])
    limit = math.sqrt(3.0 / fan_in)
    assert float(jnp.max(jnp.abs(kernel))) <= limit
    assert float(jnp.max(jnp.abs(kernel))) > 0.95 * limit
    if kernel.size > 10_000:
      assert abs(float(jnp.std(kernel)) / math.sqrt(1.0 / fan_in) - 1) < 0.03
  # init_scale multiplies every kernel draw (and leaves biases at 0), in both schemes.
  for init in models.INITS:
    kwargs = dict(input_shape=(4, 4, 1), init=init)
    base = models.get_model("lenet300100_tiny", 10, rngs=nnx.Rngs(3), **kwargs)
    scaled = models.get_model("lenet300100_tiny", 10, init_scale=2.5, rngs=nnx.Rngs(3), **kwargs)
    for (path, a), (_, b) in zip(_kernels(base), _kernels(scaled)):
      np.testing.assert_allclose(b, 2.5 * a, rtol=1e-6, err_msg=str(path))
    np.testing.assert_array_equal(scaled.layers[-1].bias.get_value(), 0.0)
    for shape in [(3, 3, 4, 8), (16, 8)]:
      key = jax.random.key(0)
      np.testing.assert_allclose(initializers.conv_init(init, 0.5)(key, shape),
                                 0.5 * initializers.conv_init(init)(key, shape), rtol=1e-6)


def test_unknown_init():
  with pytest.raises(ValueError, match="normal"):
    models.get_model("lenet5", 10, init="xavier", rngs=nnx.Rngs(0))


def test_batchnorm_train_vs_eval():
  model = models.get_model("vgg_tiny", 10, input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
  bn = model.stages[0][0].bn
  assert bn.momentum == pytest.approx(0.9)
  x = 3.0 + jax.random.normal(jax.random.key(1), (16, 8, 8, 3))

  # Training mode (the default): normalises with batch statistics and updates the
  # running averages, mean ← 0.9·mean + 0.1·batch_mean.
  assert not bn.use_running_average
  out_batch = model(x)
  batch_mean = jnp.mean(model.stages[0][0].conv(x), axis=(0, 1, 2))
  np.testing.assert_allclose(bn.mean.get_value(), 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
  # ...so an example's output depends on the rest of the batch.
  assert not np.allclose(model(x[:2])[0], out_batch[0], atol=1e-4)

  model.eval()
  assert bn.use_running_average
  stats = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
  out_eval = model(x)
  jax.tree.map(np.testing.assert_array_equal, stats,
               jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat)))
  np.testing.assert_allclose(model(x[:2])[0], out_eval[0], rtol=1e-5, atol=1e-5)

  model.train()
  assert not bn.use_running_average


def test_unknown_model_name():
  with pytest.raises(ValueError, match="Unknown model 'vgg17'.*resnet56.*vgg16"):
    models.get_model("vgg17", 10, rngs=nnx.Rngs(0))


def test_variants_are_partials_of_one_class():
  assert isinstance(models.VGG16, functools.partial) and models.VGG16.func is vgg.VGG
  assert models.ResNet18.func is models.ResNet56.func is resnet.ResNet
  assert models.LeNet5Tiny.func is lenet.LeNet5


@pytest.mark.parametrize("module", [models, initializers, lenet, vgg, resnet])
def test_docstrings(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0
