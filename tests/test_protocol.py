"""The rule every result rests on: settings are chosen on validation, never on test. A record's
validation figures must come from its validation split, and the sweeps' choice of a setting must
read nothing but them."""

import dataclasses
import json
import random

import numpy as np
import pytest

from benchmarks import sweeps

NUM_EXAMPLES = 128


def test_a_records_validation_figures_come_from_its_validation_split(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  from train import evaluation, input_pipeline, run_folder, train
  from train.configs import default
  config = default.get_config()
  config.update(dict(model="lenet300100_tiny", dataset="mnist", num_epochs=2, batch_size=32,
                     eval_batch_size=64, prepare_data=False, progress_bar=False,
                     train_split="train[:96]", validation_split="train[96:]", eval_split="test"))
  real = evaluation.Evaluator.loss_and_accuracy
  calls = []

  def tagged(self, state, split):  # the real evaluation, each split's figures told apart
    loss, accuracy = real(self, state, split)
    offset = {"train[96:]": 10.0, "test": 20.0}[split]
    calls.append(split)
    return loss + offset, accuracy / 2 if split == "test" else accuracy

  monkeypatch.setattr(evaluation.Evaluator, "loss_and_accuracy", tagged)
  input_pipeline.clear_cache()
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    train.train_and_evaluate(config, tmp_path)
  assert sorted(set(calls)) == ["test", "train[96:]"]
  for record in run_folder.records(tmp_path):
    assert 10 < record["val_loss"] < 20 and record["test_loss"] > 20
    assert record["val_accuracy"] > 0 and record["test_accuracy"] <= 0.5


def _experiment():
  method = sweeps.Method("m", "M", dict(optimizer="sgd"), "pruning_sparsity", 0.9, (0.5, 0.9),
                         ("learning_rate", (0.05, 0.1, 0.2, 0.4)), refine=False, seeds=())
  return sweeps.Experiment("protocol", "P", "train/configs/default.py", dict(num_epochs=2),
                           (method,))


def _write(experiment, trial, record):
  path = sweeps.workdir(experiment, trial) / "metrics.jsonl"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(dict(record, epoch=2)) + "\n")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("text", [False, True])
def test_the_choice_of_a_setting_reads_validation_only(tmp_path, monkeypatch, seed, text):
  monkeypatch.setattr(sweeps.outcomes, "RUNS", tmp_path / "runs")
  monkeypatch.setattr(sweeps.outcomes, "ARCHIVE", tmp_path / "results")
  monkeypatch.setattr(sweeps.outcomes, "SHARED", {})
  experiment = _experiment()
  m = experiment.methods[0]
  trials = sweeps.tune_trials(m)
  rng = random.Random(seed)
  val = rng.sample([0.90, 0.91, 0.92, 0.93], 4)
  best = trials[val.index(max(val))].setting

  def noise():  # every figure but validation's, drawn anew: the choice must not move
    keys = ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "compression",
            "density", "nonzeros") + (("test_perplexity", "train_perplexity") if text else ())
    return {k: rng.random() for k in keys}

  def validation(v):  # a language model is judged by perplexity; its accuracy is noise then
    if text:
      return dict(val_perplexity=2 - v, val_loss=float(np.log(2 - v)), val_accuracy=rng.random())
    return dict(val_accuracy=v, val_loss=1 - v)

  for trial, v in zip(trials, val):
    _write(experiment, trial, dict(noise(), **validation(v)))
  assert sweeps.tuned_setting(experiment, m) == best
  for _ in range(3):
    for trial, v in zip(trials, val):
      _write(experiment, trial, dict(noise(), **validation(v)))
    assert sweeps.tuned_setting(experiment, m) == best
  # ...and it does follow validation: the worst on validation, made the best, is chosen.
  worst = val.index(min(val))
  _write(experiment, trials[worst], dict(noise(), **validation(0.99)))
  assert sweeps.tuned_setting(experiment, m) == trials[worst].setting
  front = dataclasses.replace(trials[0], stage="front", knob_value=0.5,
                              setting=trials[worst].setting)
  assert front in sweeps.plan(experiment, [m])[0]  # the front trains the validation choice
