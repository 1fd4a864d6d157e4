r"""A small ViT (``vit``: patch 4, dim 128, depth 4, 4 heads, MLP 256; 0.55M params) on CIFAR-10
with xRDA, sized for a 2-core CPU.

The ViT costs about what ResNet-20 does (78.0 against 75.8 forward MFLOPs per image by XLA's
cost analysis, ``python -m benchmarks.model_flops``; on the loaded 2-core CPU its train step
took a third of ResNet-20's, 1.53 s against 4.67 s at batch 128), so this is
``resnet20_cifar10_xrda_cpu``'s budget and settings: the paper's ResNet ones (s_0 = 0.25,
T = T_b = 12.37, F = 500, weight decay 5e-4, cosine lr and averaging, standard augmentation) on
5 epochs, λ = 5e-5. In 40 steps of a probe, s_0 = 0.25 lowered the loss faster than 0.05 and
did not diverge without warm-up. The l1 penalty covers every attention and MLP kernel, the
patch projection and the head; the positional embedding, LayerNorms and biases stay dense
(``models.vit``).

  python -m train.main --config=train/configs/vit_cifar10_xrda_cpu.py --workdir=runs/vit_cifar10_xrda_cpu
"""

from train.configs import resnet20_cifar10_xrda_cpu


def get_config():
  """ViT / CIFAR-10 / xRDA, CPU-sized schedule."""
  config = resnet20_cifar10_xrda_cpu.get_config()
  config.model = "vit"
  return config
