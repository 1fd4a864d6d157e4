r"""ResNet-56 on CIFAR-10 with xRDA: Siegel, Chen & Xu's run.

Batch 128, 600 epochs, s_0 = 0.25 with a cosine schedule, cosine averaging α,
λ = 1.3e-6, T = T_b = 12.37, F = 500, weight decay 5e-4. Published: 94.12% test
accuracy at 8.7× compression. A GPU job.

  python -m train.main --config=train/configs/resnet56_cifar10_xrda.py --workdir=runs/resnet56_cifar10_xrda
"""

from train.configs import vgg16_cifar10_xrda


def get_config():
  """ResNet-56 / CIFAR-10 / xRDA, published hyper-parameters."""
  config = vgg16_cifar10_xrda.get_config()
  config.model = "resnet56"
  config.learning_rate = 0.25
  config.l1 = 1.3e-6
  config.momentum_timescale = 12.37
  config.magnitude_timescale = 12.37
  return config
