r"""Dense baseline of ``lenet300100_mnist_xrda``: SGD with momentum, same epochs.

  python -m train.main --config=train/configs/lenet300100_mnist_sgd.py --workdir=runs/lenet300100_mnist_sgd
"""

from train.configs import default, lenet300100_mnist_xrda


def get_config():
  """LeNet-300-100 / MNIST / dense SGD."""
  return default.sgd_baseline(lenet300100_mnist_xrda.get_config(), learning_rate=0.05)
