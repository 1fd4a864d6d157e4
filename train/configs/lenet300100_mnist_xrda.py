r"""LeNet-300-100 on MNIST with xRDA + adaptive log-l1 (short CPU schedule, as LeNet-5's).

  python -m train.main --config=train/configs/lenet300100_mnist_xrda.py --workdir=runs/lenet300100_mnist_xrda
"""

from train.configs import lenet5_mnist_xrda


def get_config():
  """LeNet-300-100 / MNIST / xRDA."""
  config = lenet5_mnist_xrda.get_config()
  config.model = "lenet300100"
  return config
