"""One sweep worker for tests/test_sweep_workers.py: ``python tests/sweep_worker.py RUNS ARCHIVE
STORAGE`` runs the toy experiment below on STORAGE with tests/sweep_trainer.py as the trainer."""

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import sweeps  # noqa: E402

EPOCHS = 3
# LeNet-300-100 on 128 mock examples a split: 3 steps an epoch, 0.3 s each at least.
OVERRIDES = dict(num_epochs=EPOCHS, batch_size=32, eval_batch_size=64, prepare_data=False,
                 progress_bar=False, train_split="train[:96]", validation_split="train[96:]",
                 checkpoint_every_steps=1)


def experiment() -> sweeps.Experiment:
  method = sweeps.Method("xrda", "xRDA", dict(l1=1e-4), None, None, (),
                         ("learning_rate", (0.1, 0.2)), refine=False, seeds=(1,))
  return sweeps.Experiment("workers", "Two workers", "train/configs/lenet300100_mnist_xrda.py",
                           OVERRIDES, (method,))


def main(runs: str, archive: str, storage: str) -> None:
  # The sources it watches (a worker restarts when they change): an empty folder, so that an
  # edit to benchmarks/sweeps/ while the tests run is not one.
  sweeps.engine.SOURCES = Path(tempfile.mkdtemp(prefix="sweep-sources-"))
  sweeps.engine.IMPORTED = sweeps.engine.sources_fingerprint()
  sweeps.outcomes.RUNS = Path(runs)
  sweeps.outcomes.ARCHIVE = Path(archive)
  sweeps.engine.TRAINER = [str(REPO / "tests" / "sweep_trainer.py")]
  sweeps.engine.POLL_S = 0.5
  toy = experiment()
  sweeps.engine.Sweep([(toy, list(toy.methods))],
                      sweeps.engine.storage(storage, heartbeat_s=1, grace_s=4), workers=1).run()


if __name__ == "__main__":
  main(*sys.argv[1:])
