r"""Dense baseline of ``resnet20_cifar10_xrda_cpu``: SGD with momentum, same epochs.

  python -m train.main --config=train/configs/resnet20_cifar10_sgd_cpu.py --workdir=runs/resnet20_cifar10_sgd_cpu
"""

from train.configs import default, resnet20_cifar10_xrda_cpu


def get_config():
  """ResNet-20 / CIFAR-10 / dense SGD, CPU-sized schedule."""
  return default.sgd_baseline(resnet20_cifar10_xrda_cpu.get_config(), learning_rate=0.1)
