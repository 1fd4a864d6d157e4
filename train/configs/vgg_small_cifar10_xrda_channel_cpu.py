r"""The small VGG on CIFAR-10 with xRDA in channel mode: whole output channels go to zero, so
`python -m train.export --format=thin` gives a narrower VGG.

The settings of `vgg_small_cifar10_xrda_cpu` (4 epochs, λ = 3e-5, not re-tuned for channel
mode) with `structure = "channel"`: the log-l1 weight is shared by each output channel's
weights. About 40 minutes on a 2-core CPU.

  python -m train.main --config=train/configs/vgg_small_cifar10_xrda_channel_cpu.py --workdir=runs/vgg_small_channel
"""

from train.configs import vgg_small_cifar10_xrda_cpu


def get_config():
  """Small VGG / CIFAR-10 / xRDA channel mode, CPU-sized schedule."""
  config = vgg_small_cifar10_xrda_cpu.get_config()
  config.structure = "channel"
  return config
