r"""Dense baseline of ``vit_cifar10_xrda_cpu``: SGD with momentum, same epochs.

  python -m train.main --config=train/configs/vit_cifar10_sgd_cpu.py --workdir=runs/vit_cifar10_sgd_cpu
"""

from train.configs import default, vit_cifar10_xrda_cpu


def get_config():
  """ViT / CIFAR-10 / dense SGD, CPU-sized schedule."""
  return default.sgd_baseline(vit_cifar10_xrda_cpu.get_config(), learning_rate=0.1)
