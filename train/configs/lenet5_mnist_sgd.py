r"""Dense baseline of ``lenet5_mnist_xrda``: SGD with momentum, same epochs.

  python -m train.main --config=train/configs/lenet5_mnist_sgd.py --workdir=runs/lenet5_mnist_sgd
"""

from train.configs import default, lenet5_mnist_xrda


def get_config():
  """LeNet-5 / MNIST / dense SGD."""
  return default.sgd_baseline(lenet5_mnist_xrda.get_config(), learning_rate=0.05)
