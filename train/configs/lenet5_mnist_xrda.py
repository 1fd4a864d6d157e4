r"""Caffe LeNet-5 on MNIST with xRDA + adaptive log-l1: the README's quick run.

A few minutes on a 2-core CPU; ~99% test accuracy with most weights exactly zero.

  python -m train.main --config=train/configs/lenet5_mnist_xrda.py --workdir=runs/lenet5_mnist_xrda
"""

from train.configs import default


def get_config():
  """LeNet-5 / MNIST / xRDA, short schedule."""
  config = default.get_config()
  config.model = "lenet5"
  config.dataset = "mnist"
  config.optimizer = "xrda"
  config.num_epochs = 5
  config.batch_size = 128
  config.learning_rate = 0.5
  config.momentum_timescale = 9.5
  config.l1 = 1e-6
  return config
