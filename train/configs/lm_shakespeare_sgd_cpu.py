r"""Dense baseline of ``lm_shakespeare_xrda_cpu``: SGD with momentum, same epochs (the sweep
``lm_shakespeare_equal`` compares with AdamW, ``config.optimizer="adamw"``, instead).

  python -m train.main --config=train/configs/lm_shakespeare_sgd_cpu.py --workdir=runs/lm_shakespeare_sgd_cpu
"""

from train.configs import default, lm_shakespeare_xrda_cpu


def get_config():
  """Byte-level LM / Shakespeare / dense SGD, CPU-sized schedule."""
  return default.sgd_baseline(lm_shakespeare_xrda_cpu.get_config(), learning_rate=0.1)
