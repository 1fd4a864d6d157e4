r"""Trains a sparse network: ``python -m train.main --config=CONFIG --workdir=DIR``.

For example (a few minutes on a laptop CPU; ``make train`` runs the sparsity-target config)::

  python -m train.main --config=train/configs/lenet5_mnist_xrda.py --workdir=runs/lenet5_mnist_xrda

Any config field can be overridden, ``--config.num_epochs=2``; unknown fields are
an error. Rerunning the same command resumes from the latest checkpoint in
``--workdir``; Ctrl-C and SIGTERM save a checkpoint at the next step boundary and exit with
128 + the signal's number (130, 143).
"""

import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from train import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
    logging.set_verbosity(logging.WARNING)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: a checkpoint was saved
    signum = getattr(stop, "signum", signal.SIGINT)
    print(f"\nStopped ({signal.Signals(signum).name}): checkpoint saved; rerun the same command "
          "to resume.", file=sys.stderr)
    sys.exit(128 + signum)


if __name__ == "__main__":
  app.run(main)
