r"""VGG-16 (BatchNorm, one linear layer) on CIFAR-10 with xRDA: Siegel, Chen & Xu's run.

Batch 128, 600 epochs, s_0 = 1.0 with a cosine schedule, cosine averaging α,
λ = 1e-6, T = T_b = 9.5, F = 500, weight decay 5e-4. Published: 94.16% test
accuracy at 77× compression. A GPU job (days on a CPU).

  python -m train.main --config=train/configs/vgg16_cifar10_xrda.py --workdir=runs/vgg16_cifar10_xrda

Kernel sparsity (paper Table 3): ``--config.structure=kernel --config.l1=8e-7``.
"""

from train.configs import default


def get_config():
  """VGG-16 / CIFAR-10 / xRDA, published hyper-parameters."""
  config = default.get_config()
  config.model = "vgg16"
  config.dataset = "cifar10"
  config.optimizer = "xrda"
  config.batch_size = 128
  config.num_epochs = 600
  config.learning_rate = 1.0
  config.lr_schedule = "cosine"
  config.averaging = "cosine"
  config.l1 = 1e-6
  config.momentum_timescale = 9.5
  config.magnitude_timescale = 9.5
  config.maximum_factor = 500.0
  config.weight_decay = 5e-4
  config.structure = "unstructured"
  return config
