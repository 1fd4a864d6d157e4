r"""Dense baseline of ``resnet56_cifar10_xrda``: SGD with momentum 0.9, lr 0.1 cosine, 600 epochs.

  python -m train.main --config=train/configs/resnet56_cifar10_sgd.py --workdir=runs/resnet56_cifar10_sgd
"""

from train.configs import default, resnet56_cifar10_xrda


def get_config():
  """ResNet-56 / CIFAR-10 / dense SGD."""
  return default.sgd_baseline(resnet56_cifar10_xrda.get_config(), learning_rate=0.1)
