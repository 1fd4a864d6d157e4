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
from models import initializers, lenet, lm, pooling, resnet, transformer, vgg, vit


@pytest.fixture(scope="module")
def lenet5():
  return models.get_model("lenet5", 10, rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def resnet_tiny():
  return models.get_model("resnet_tiny", 10, rngs=nnx.Rngs(0))


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
    ("vgg_small", 10, (32, 32, 3), 279_882, None),
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


def example_input_shape(name: str) -> tuple[int, ...]:
  """An input shape model ``name`` is built for: MNIST's, CIFAR's, or 16 tokens (the LMs)."""
  if name.startswith("lm"):
    return (16,)
  return (28, 28, 1) if name.startswith("lenet") or name == "vit_tiny" else (32, 32, 3)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_output_shape(name):
  input_shape = example_input_shape(name)
  tokens = len(input_shape) == 1  # a language model: token ids in, logits per position out

  def forward():
    model = models.get_model(name, 7, input_shape=input_shape, rngs=nnx.Rngs(0))
    return model(jnp.zeros((3, *input_shape), jnp.int32 if tokens else jnp.float32))

  out = nnx.eval_shape(forward)
  assert out.shape == ((3, 16, 7) if tokens else (3, 7))
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


def test_resnet_shortcuts(resnet_tiny):
  assert not resnet_tiny.blocks[1].use_projection  # zero-pad (option A), as ResNet-20/32/56
  assert resnet_tiny.blocks[1].conv1.kernel.shape == (3, 3, 8, 16)
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


@pytest.mark.parametrize("shape", [(3, 3, 64, 64), (3, 3, 16, 32), (1, 1, 256, 128)])
def test_conv_init_statistics(shape):
  kernel = initializers.conv_init()(jax.random.key(0), shape)
  expected = math.sqrt(2.0 / math.prod(shape[:-1]))
  assert abs(float(jnp.std(kernel)) / expected - 1) < 0.03
  assert abs(float(jnp.mean(kernel))) < 0.03 * expected
  # Untruncated normal: draws beyond 3σ exist (a truncated normal stops at 2σ).
  assert float(jnp.max(jnp.abs(kernel))) > 3 * expected


def test_model_init_statistics(lenet5, resnet_tiny):
  # The models use those initialisers: conv N(0, 2/fan_in), linear N(0, 0.01²).
  assert abs(float(jnp.std(lenet5.conv2.kernel.get_value())) / math.sqrt(2 / 500) - 1) < 0.03
  assert abs(float(jnp.std(lenet5.fc1.kernel.get_value())) / 0.01 - 1) < 0.02
  assert abs(float(jnp.std(lenet5.fc2.kernel.get_value())) / 0.01 - 1) < 0.05
  kernel = resnet_tiny.blocks[1].conv2.kernel.get_value()  # (3, 3, 16, 16)
  assert abs(float(jnp.std(kernel)) / math.sqrt(2 / 144) - 1) < 0.05


def test_biases_zero_and_batchnorm_identity(lenet5, resnet_tiny):
  for model in (lenet5, resnet_tiny):
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


@pytest.mark.parametrize("make,shape", [
    (initializers.conv_init, (3, 3, 64, 64)),
    (initializers.linear_init, (784, 300)),
])
def test_uniform_init_statistics(make, shape):
  kernel = make("uniform")(jax.random.key(0), shape)
  fan_in = math.prod(shape[:-1])
  limit = math.sqrt(3.0 / fan_in)
  assert 0.99 * limit < float(jnp.max(jnp.abs(kernel))) <= limit
  assert abs(float(jnp.std(kernel)) / math.sqrt(1.0 / fan_in) - 1) < 0.03


@pytest.mark.parametrize("init", models.INITS)
def test_init_scale_multiplies_kernels(init):
  for make in (initializers.conv_init, initializers.linear_init):
    key, shape = jax.random.key(0), (3, 3, 4, 8)
    np.testing.assert_allclose(make(init, 0.5)(key, shape), 0.5 * make(init)(key, shape),
                               rtol=1e-6)


def test_models_take_init_and_init_scale():
  kwargs = dict(input_shape=(4, 4, 1), init="uniform")
  base = models.get_model("lenet300100_tiny", 10, rngs=nnx.Rngs(3), **kwargs)
  scaled = models.get_model("lenet300100_tiny", 10, init_scale=2.5, rngs=nnx.Rngs(3), **kwargs)
  for (path, a), (_, b) in zip(_kernels(base), _kernels(scaled), strict=True):
    assert float(jnp.max(jnp.abs(a))) <= math.sqrt(3.0 / a.shape[0])  # uniform, not normal
    np.testing.assert_allclose(b, 2.5 * a, rtol=1e-6, err_msg=str(path))
  np.testing.assert_array_equal(scaled.layers[-1].bias.get_value(), 0.0)


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


@pytest.mark.parametrize("module", [models, initializers, lenet, vgg, resnet, transformer, vit, lm])
def test_docstrings(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_input_layer_is_the_layer_that_sees_the_image(name):
  """The path names the one kernel whose input is the image's channels (or flattened image);
  a language model's, its token embedding."""
  shape = example_input_shape(name)
  model = nnx.eval_shape(lambda: models.get_model(name, 10, input_shape=shape,
                                                  rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  layer = params
  for key in models.input_layer(name):
    layer = layer[key]
  if len(shape) == 1:
    assert set(layer) == {"embedding"} and layer["embedding"].shape[0] == 10  # the vocabulary
    return

  def sees_image(kernel):
    return (kernel.ndim == 4 and kernel.shape[2] == shape[-1]) or (
        kernel.ndim == 2 and kernel.shape[0] == math.prod(shape))

  assert sees_image(layer["kernel"])
  kernels = [x for x in jax.tree.leaves(params) if x.ndim >= 2]
  assert sum(map(sees_image, kernels)) == 1


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (3, 9, 7, 4), (1, 2, 2, 1)])
def test_max_pool_2x2_matches_flax_max_pool_and_its_gradient(shape):
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)  # no ties
  flax_pool = lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
  np.testing.assert_array_equal(pooling.max_pool_2x2(x), flax_pool(x))
  weights = jnp.asarray(np.random.default_rng(1).normal(size=flax_pool(x).shape), jnp.float32)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(weights * pool(x)))(x)  # noqa: E731
  np.testing.assert_array_equal(grad(pooling.max_pool_2x2), grad(flax_pool))


def test_max_pool_2x2_splits_a_tied_maximum_evenly_and_rejects_bad_shapes():
  x = jnp.zeros((1, 2, 2, 1))
  np.testing.assert_allclose(jax.grad(lambda x: pooling.max_pool_2x2(x).sum())(x),
                             np.full((1, 2, 2, 1), 0.25))
  with pytest.raises(ValueError, match="NHWC"):
    pooling.max_pool_2x2(jnp.zeros((4, 4, 1)))
  with pytest.raises(ValueError, match="at least 2×2"):
    pooling.max_pool_2x2(jnp.zeros((1, 1, 4, 1)))
