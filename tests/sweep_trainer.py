"""``python -m train.main`` on ``tfds.testing.mock_data`` with each step at least STEP_S long:
the trainer of tests/test_sweep_workers.py's sweeps (a worker can be killed mid-trial)."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow_datasets as tfds  # noqa: E402
from absl import app  # noqa: E402

from train import main, train  # noqa: E402

NUM_EXAMPLES = 128
STEP_S = 0.3

_train_and_evaluate = train.train_and_evaluate


def _slow_mock_training(config, workdir, hooks=()):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    return _train_and_evaluate(config, workdir, hooks=(*hooks, lambda step: time.sleep(STEP_S)))


if __name__ == "__main__":
  train.train_and_evaluate = _slow_mock_training
  app.run(main.main)
