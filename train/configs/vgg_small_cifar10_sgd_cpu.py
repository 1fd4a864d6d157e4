r"""Dense baseline of ``vgg_small_cifar10_xrda_cpu``: SGD with momentum, same epochs.

  python -m train.main --config=train/configs/vgg_small_cifar10_sgd_cpu.py --workdir=runs/vgg_small_cifar10_sgd_cpu
"""

from train.configs import default, vgg_small_cifar10_xrda_cpu


def get_config():
  """Small VGG / CIFAR-10 / dense SGD, CPU-sized schedule."""
  return default.sgd_baseline(vgg_small_cifar10_xrda_cpu.get_config(), learning_rate=0.1)
