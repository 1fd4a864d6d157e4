r"""ResNet-20 on CIFAR-10 with xRDA, short enough for a 2-core CPU (under an hour).

The paper's ResNet settings (s_0 = 0.25, T = T_b = 12.37, F = 500, weight decay
5e-4, cosine lr and averaging, standard augmentation) on a schedule of a few
epochs instead of 600; λ is raised to make up for the ~100× fewer steps (the
threshold grows with the accumulated step size).

  python -m train.main --config=train/configs/resnet20_cifar10_xrda_cpu.py --workdir=runs/resnet20_cifar10_xrda_cpu
"""

from train.configs import resnet56_cifar10_xrda


def get_config():
  """ResNet-20 / CIFAR-10 / xRDA, CPU-sized schedule."""
  config = resnet56_cifar10_xrda.get_config()
  config.model = "resnet20"
  config.num_epochs = 5
  config.l1 = 5e-5
  return config
