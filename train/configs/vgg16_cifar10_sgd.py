r"""Dense baseline of ``vgg16_cifar10_xrda``: SGD with momentum 0.9, lr 0.1 cosine, 600 epochs.

  python -m train.main --config=train/configs/vgg16_cifar10_sgd.py --workdir=runs/vgg16_cifar10_sgd
"""

from train.configs import default, vgg16_cifar10_xrda


def get_config():
  """VGG-16 / CIFAR-10 / dense SGD."""
  return default.sgd_baseline(vgg16_cifar10_xrda.get_config(), learning_rate=0.1)
