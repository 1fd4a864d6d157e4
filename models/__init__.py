"""Flax NNX models of the sparse-training papers, NHWC inputs, HWIO conv kernels.

Every model takes ``num_classes`` and the keyword arguments ``input_shape``
(``(H, W, C)`` of one example), ``init`` (``"normal"``: He / N(0, 0.01²) init, or
``"uniform"``: U(±sqrt(3/fan_in))), ``init_scale`` (factor on every kernel draw)
and ``rngs``. BatchNorm models start in training mode; ``model.eval()`` switches
BatchNorm to its running averages and ``model.train()`` back.

>>> from flax import nnx
>>> model = get_model("lenet5", 10, rngs=nnx.Rngs(0))
>>> type(model).__name__
'LeNet5'
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from models.initializers import INITS
from models.lenet import LeNet5, LeNet5Tiny, LeNet300100, LeNet300100Tiny
from models.lm import DecoderLM, LMSmall, LMTiny
from models.resnet import BasicBlock, ResNet, ResNet18, ResNet20, ResNet32, ResNet56, ResNetTiny
from models.thinning import LayerThinning, ThinningReport, thin
from models.vgg import VGG, VGG11, VGG16, VGG19, VGGSmall, VGGTiny
from models.vit import ViT, ViTCifar, ViTTi, ViTTiny

MODELS: dict[str, Callable[..., nnx.Module]] = {
    "lenet300100": LeNet300100,
    "lenet5": LeNet5,
    "vgg11": VGG11,
    "vgg16": VGG16,
    "vgg19": VGG19,
    "vgg_small": VGGSmall,
    "resnet18": ResNet18,
    "resnet20": ResNet20,
    "resnet32": ResNet32,
    "resnet56": ResNet56,
    "vit": ViTCifar,  # about ResNet-20's FLOPs on CIFAR-10
    "vit_ti": ViTTi,
    "lm": LMSmall,  # decoder-only LM; num_classes is the vocabulary
    # Tiny variants, for tests.
    "lenet300100_tiny": LeNet300100Tiny,
    "lenet5_tiny": LeNet5Tiny,
    "vgg_tiny": VGGTiny,
    "resnet_tiny": ResNetTiny,
    "vit_tiny": ViTTiny,
    "lm_tiny": LMTiny,
}


def get_model(name: str, num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """Builds the registered model ``name`` (see ``MODELS``) with ``num_classes`` outputs.

  ``kwargs`` go to the model's constructor (``input_shape``, ``init``, ``init_scale``).
  Raises ``ValueError`` for an unknown name.
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}.")
  return MODELS[name](num_classes, rngs=rngs, **kwargs)


def penalty_mask(name: str) -> Callable | None:
  """Model ``name``'s mask of the leaves an l1 penalty or pruning may zero (``params -> tree of
  bools``), or None where the library's default (leaves with ``ndim >= 2``) is right. The
  Transformers declare one: their embedding tables and positional embeddings are 2-D or 3-D
  but stay dense."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}.")
  model = MODELS[name]
  return getattr(getattr(model, "func", model), "penalty_mask", None)


def group_structure(name: str) -> Callable | None:
  """Model ``name``'s ``structure=`` for the log-l1 weights that groups its attention heads and
  MLP neurons (``params -> tree`` of ``sparse_optax.tied`` leaves, see
  ``models.transformer.group_structure``), or None for a model without them."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}.")
  model = MODELS[name]
  return getattr(getattr(model, "func", model), "group_structure", None)


def input_layer(name: str) -> tuple[str | int, ...]:
  """The params path of model ``name``'s first layer, the one that sees the image.

  Taken from the model, not from the params tree, whose order is alphabetical (a VGG's
  ``classifier`` comes before its ``stages``). RigL keeps this layer dense.
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}.")
  model = MODELS[name]
  return getattr(model, "func", model).INPUT_LAYER  # some entries are functools.partial


__all__ = [
    "INITS", "MODELS", "get_model", "group_structure", "input_layer", "penalty_mask",
    "LeNet300100", "LeNet5", "VGG", "VGG11", "VGG16", "VGG19", "VGGSmall",
    "BasicBlock", "ResNet", "ResNet18", "ResNet20", "ResNet32", "ResNet56",
    "LeNet300100Tiny", "LeNet5Tiny", "VGGTiny", "ResNetTiny",
    "ViT", "ViTCifar", "ViTTi", "ViTTiny", "DecoderLM", "LMSmall", "LMTiny",
    "thin", "ThinningReport", "LayerThinning",
]
