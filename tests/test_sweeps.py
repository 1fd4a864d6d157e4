"""The sweep runner's plan and selection, and the report, on hand-written metrics files."""

import json
import math
import subprocess
import sys

import pytest

from benchmarks import comparison, report, sweeps


def _experiment():
  methods = (
      sweeps.Method("m", "method M", dict(optimizer="sgd"), "pruning_sparsity", 0.9,
                    (0.5, 0.9, 0.99), ("learning_rate", (0.1, 0.2)), refine=False),
      sweeps.Method("d", "dense", dict(optimizer="sgd"), None, None, (),
                    ("learning_rate", (0.1, 0.2)), refine=False),
  )
  return sweeps.Experiment("toy", "Toy", "train/configs/default.py", dict(num_epochs=2),
                           methods, published=(("dense", 1.0, 1.0, "a paper"),
                                                      ("P", 4.0, 50.0, "a paper")))


def _finish(experiment, trial, val, test, compression, epoch=2, **extra):
  path = sweeps.workdir(experiment, trial) / "metrics.jsonl"
  path.parent.mkdir(parents=True, exist_ok=True)
  # Weights counted apart as the loop logs them (a kernel and a bias): here the same compression.
  layers = {"dense/kernel": dict(nonzeros=10, total=round(10 * compression)),
            "dense/bias": dict(nonzeros=5, total=5)}
  record = dict(epoch=epoch, val_accuracy=val, test_accuracy=test, compression=compression,
                nonzeros=10, layers=layers, **extra)
  path.write_text(json.dumps(dict(record, epoch=1)) + "\n" + json.dumps(record) + "\n")


@pytest.fixture(autouse=True)
def sources_nobody_edits(tmp_path_factory, monkeypatch):
  """The runner's sources, as the runner watches them (a worker restarts when they change),
  are an empty folder here: an edit to benchmarks/sweeps/ while the tests run is not one."""
  monkeypatch.setattr(sweeps.engine, "SOURCES", tmp_path_factory.mktemp("sources"))
  monkeypatch.setattr(sweeps.engine, "IMPORTED", sweeps.engine.sources_fingerprint())


@pytest.fixture
def experiment(tmp_path, monkeypatch):
  monkeypatch.setattr(sweeps.outcomes, "RUNS", tmp_path / "runs")
  monkeypatch.setattr(sweeps.outcomes, "ARCHIVE", tmp_path / "results")
  monkeypatch.setattr(sweeps.outcomes, "SHARED", {})
  monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
  return _experiment()


def test_fronts_and_seeds_wait_for_the_tuning_and_use_its_validation_choice(experiment):
  m = experiment.methods[0]
  ready, waiting = sweeps.plan(experiment, [m])
  assert [t.setting for t in ready] == [0.1, 0.2] and all(t.stage == "tune" for t in ready)
  assert len(waiting) == 2 + 2  # the two other front values, seeds 1 and 2
  low, high = sweeps.tune_trials(m)
  # 0.2 is better on validation, 0.1 on test: the choice follows validation.
  _finish(experiment, low, val=0.90, test=0.99, compression=10.0)
  assert sweeps.plan(experiment, [m])[0] == [high]  # an unfinished tune trial still blocks
  _finish(experiment, high, val=0.95, test=0.80, compression=10.0)
  ready, waiting = sweeps.plan(experiment, [m])
  assert not waiting
  assert {(t.stage, t.knob_value, t.setting, t.seed) for t in ready} == {
      ("front", 0.5, 0.2, 0), ("front", 0.99, 0.2, 0), ("seed", 0.9, 0.2, 1),
      ("seed", 0.9, 0.2, 2)}
  assert all(t.overrides(experiment)["learning_rate"] == 0.2 for t in ready)
  assert ready[0].overrides(experiment)["pruning_sparsity"] == ready[0].knob_value


def test_a_trial_cut_before_its_last_epoch_is_not_finished(experiment):
  trial = sweeps.tune_trials(experiment.methods[1])[0]
  _finish(experiment, trial, 0.9, 0.9, 1.0, epoch=1)
  assert not sweeps.finished(experiment, trial)
  assert trial in sweeps.plan(experiment, [experiment.methods[1]])[0]


def test_report_means_the_seeds_and_orders_the_front(experiment):
  m = experiment.methods[0]
  low, high = sweeps.tune_trials(m)
  _finish(experiment, low, 0.90, 0.99, 10.0)
  _finish(experiment, high, 0.95, 0.97, 10.0)  # seed 0 of the reference: 3% test error
  ready, _ = sweeps.plan(experiment, [m])
  for trial in ready:
    if trial.stage == "seed":  # 5% and 7% test error
      _finish(experiment, trial, 0.9, 0.95 if trial.seed == 1 else 0.93, 11.0)
    else:
      _finish(experiment, trial, 0.9, 0.9, 100.0 if trial.knob_value == 0.99 else 2.0)
  summary = report.summarize(experiment)
  entry = summary["methods"]["m"]
  assert entry["tuned"]["chosen"] == 0.2
  assert entry["reference"]["seeds"] == [0, 1, 2]
  assert entry["reference"]["test_error_mean"] == pytest.approx(5.0)
  assert entry["reference"]["test_error_std"] == pytest.approx(2.0)
  assert [r["compression"] for r in entry["front"]] == [2.0, 10.0, 100.0]
  assert summary["missing"] == [t.id for t in sweeps.tune_trials(experiment.methods[1])]
  text = report.markdown(summary)
  assert "| method M | pruning_sparsity = 0.9 | learning_rate = 0.2 (of [0.1, 0.2]; on the edge) | 0, 1, 2 | " \
         "5.00 ± 2.00 | 10.7 ± 0.6 | 10.7 ± 0.6 |" in text
  # the front (2×: 10%, 10×: 3%, 100×: 10%) at the published 50×: 3 + 7·log(5)/log(10)
  assert "| method M | 7.89 (+3.89) |" in text
  seed1 = next(r for r in entry["seed_rows"] if r["seed"] == 1)
  assert seed1["command"].startswith(
      "python -m train.main --config=train/configs/default.py --workdir=")
  assert "--config.seed=1" in seed1["command"] and "--config.learning_rate=0.2" in seed1["command"]
  assert f"- method M, pruning_sparsity = 0.9, seed 1: `{seed1['command']}`" in text


@pytest.mark.parametrize("cores, workers, expected", [
    ({0, 1}, 2, [{0}, {1}]),
    ({0, 1, 2, 3, 4}, 2, [{0, 1}, {2, 3}]),
    ({0, 1}, 3, [None, None, None]),  # fewer cores than workers: no pinning
    ({0, 1}, 1, [None]),
])
def test_each_worker_gets_its_own_cores(monkeypatch, cores, workers, expected):
  monkeypatch.setattr(sweeps.engine.os, "sched_getaffinity", lambda pid: cores)
  assert sweeps.core_slots(workers) == expected


def test_a_method_without_seeds_waits_only_for_its_front(experiment):
  import dataclasses
  m = dataclasses.replace(experiment.methods[0], seeds=())
  assert len(sweeps.plan(experiment, [m])[1]) == 2  # the two other front values


def test_the_plan_of_several_experiments_keeps_their_order(experiment, capsys):
  sweeps.main(["--experiment", "lenet5_mnist,lenet300100_mnist", "--plan", "--methods", "xrda"])
  rows = [line.split() for line in capsys.readouterr().out.splitlines()]
  ready = [experiment for state, experiment, _ in rows if state == "ready"]
  assert ready and ready == sorted(
      ready, key=["lenet5_mnist_tuning", "lenet5_mnist", "lenet300100_mnist"].index)
  with pytest.raises(SystemExit):
    sweeps.main(["--experiment", "lenet5_mnist", "--plan", "--methods", "rigl"])


def _sweep(queue, workers=1):
  """The engine on an in-memory Optuna storage (the SQLite and multi-process paths are
  tests/test_sweep_workers.py's)."""
  import optuna
  return sweeps.Sweep(queue, optuna.storages.InMemoryStorage(), workers)


@pytest.fixture
def quick(monkeypatch):
  """No waiting: idle workers look again at once, trainings are polled without sleeping."""
  monkeypatch.setattr(sweeps.engine, "POLL_S", 0.0)
  monkeypatch.setattr(sweeps.engine.time, "sleep", lambda _: None)


def test_the_runner_runs_the_queue_on_separate_cores_and_then_what_the_tuning_unlocked(
    experiment, monkeypatch, capsys, quick):
  launched = []

  class Finished:  # a trial that has trained every epoch by the time it is polled
    returncode = 0

    def __init__(self, trial):
      self.trial = trial

    def poll(self):
      val = 0.95 if self.trial.setting == 0.2 else 0.9
      _finish(experiment, self.trial, val=val, test=0.9, compression=10.0)
      return 0

  def launch(exp, trial, cores):
    launched.append((exp.id, trial.id, frozenset(cores)))
    return Finished(trial)

  monkeypatch.setattr(sweeps.engine, "launch", launch)
  monkeypatch.setattr(sweeps.engine, "core_slots", lambda workers: [{0}, {1}][:workers])
  sweep = _sweep([(experiment, list(experiment.methods))], workers=2)
  sweep.run()
  ids = [trial_id for _, trial_id, _ in launched]
  assert len(ids) == len(set(ids)) == 2 + 4 + 2 + 2  # m: tune, front + seeds; d: tune, seeds
  assert {c for _, _, c in launched} <= {frozenset({0}), frozenset({1})}
  assert not sweeps.plan(experiment, list(experiment.methods))[0]
  assert capsys.readouterr().out.splitlines()[-1] == sweeps.FINISHED
  study = sweep.studies[experiment.id]  # one Optuna trial each, valued by its validation
  values = {t.user_attrs["trial"]: t.value for t in study.trials}
  assert len(study.trials) == len(ids) and set(values) == set(ids)
  assert all(values[t.id] == 0.95 for t in sweeps.tune_trials(experiment.methods[0])
             if t.setting == 0.2)
  assert json.loads(sweeps.archive_path(experiment).read_text()).keys() == set(ids)


def test_a_diverged_trial_is_an_outcome_that_the_tuning_passes_over(experiment, monkeypatch):
  m = experiment.methods[0]
  low, high = sweeps.tune_trials(m)
  _finish(experiment, low, val=0.90, test=0.9, compression=10.0)
  directory = sweeps.workdir(experiment, high)
  directory.mkdir(parents=True)
  (directory / "log.txt").write_text("epoch 1 ...\nFloatingPointError: Training diverged in "
                                     "epoch 2: the train loss is nan.\n")
  assert sweeps.outcomes.diverged(directory)  # what the runner calls when a trial exits non-zero
  assert sweeps.finished(experiment, high)
  assert sweeps.tuned_setting(experiment, m) == 0.1
  summary = report.summarize(experiment)
  assert summary["diverged"] == [high.id]
  assert "Diverged (1)" in report.markdown(summary)
  (sweeps.workdir(experiment, low) / sweeps.DIVERGED).write_text("Training diverged\n")
  assert sweeps.plan(experiment, [m]) == ([], [])  # every setting diverged: nothing to run


def test_a_crash_is_not_taken_for_divergence(tmp_path):
  (tmp_path / "log.txt").write_text("Traceback ...\nMemoryError\n")
  assert not sweeps.outcomes.diverged(tmp_path)
  assert not (tmp_path / sweeps.DIVERGED).exists()


def test_the_report_shows_each_front_point_before_and_after_retraining(experiment):
  import dataclasses
  m = dataclasses.replace(experiment.methods[0], overrides=dict(optimizer="rda",
                                                                freeze_zeros_epoch=1))
  exp = dataclasses.replace(experiment, methods=(m,))
  for trial in sweeps.tune_trials(m):
    _finish(exp, trial, val=0.9 + trial.setting / 10, test=0.8, compression=10.0)
  path = sweeps.workdir(exp, sweeps.tune_trials(m)[1]) / "metrics.jsonl"
  first, last = path.read_text().splitlines()
  path.write_text(json.dumps(dict(json.loads(first), test_accuracy=0.7, compression=5.0)) + "\n"
                  + last + "\n")
  summary = report.summarize(exp)
  row = summary["methods"]["m"]["front"][0]
  assert row["before_retraining"] == dict(epoch=1, test_error=pytest.approx(30.0),
                                          compression=5.0)
  assert "| method M | 0.9 | 5 | 30.00 | 10 | 20.00 |" in report.markdown(summary)


def test_affine_scalings_iterations_are_archived_and_reported_with_their_kurtosis(experiment):
  import dataclasses
  import shutil
  m = dataclasses.replace(experiment.methods[0], front=(), overrides=dict(
      optimizer="affine_scaling", affine_iterations=2, affine_period_epochs=2,
      affine_leafwise=True))
  exp = dataclasses.replace(experiment, overrides=dict(num_epochs=6), methods=(m,))
  trial = sweeps.tune_trials(m)[0]
  path = sweeps.workdir(exp, trial) / "metrics.jsonl"
  path.parent.mkdir(parents=True)
  layers = lambda epoch: {"a/kernel": {"density": 1.0, "kurtosis": 3.0 + epoch},  # noqa: E731
                          "a/bias": {"density": 1.0}, "b/kernel": {"kurtosis": 10.0 * epoch}}
  path.write_text("".join(json.dumps(dict(
      epoch=e, val_accuracy=0.9 + e / 100, test_accuracy=0.8, compression=float(e), nonzeros=1,
      layers=layers(e))) + "\n" for e in range(1, 7)))
  assert sweeps.kept_epochs(exp, trial) == [2, 4]
  sweeps.archive(exp)
  entry = json.loads(sweeps.archive_path(exp).read_text())[trial.id]
  assert [r["epoch"] for r in entry["records"]] == [2, 4, 6]
  shutil.rmtree(sweeps.outcomes.RUNS)  # the report reads the iterations from the archive
  row = report._row(exp, trial)
  assert [(i["epoch"], i["kurtosis"]) for i in row["iterations"]] == [
      (2, {"a/kernel": 5.0, "b/kernel": 20.0}), (4, {"a/kernel": 7.0, "b/kernel": 40.0}),
      (6, {"a/kernel": 9.0, "b/kernel": 60.0})]
  table = report._iterations_table({"methods": {"m": {"label": "M", "front": [row]}}})
  assert ("| epoch | refreshed | val error % | test error % | compression × | kurtosis a/kernel |"
          " kurtosis b/kernel |") in table
  assert "| 2 | a/kernel | 8.00 | 20.00 | 2 | 5.0 | 20.0 |" in table  # leafwise: a, then b
  assert "| 4 | b/kernel | 6.00 | 20.00 | 4 | 7.0 | 40.0 |" in table
  assert "| 6 | pruned, retrained | 4.00 | 20.00 | 6 | 9.0 | 60.0 |" in table


def test_error_at_a_compression_interpolates_in_log_compression_only_inside_the_front():
  front = [dict(compression=10.0, test_error=1.0), dict(compression=1000.0, test_error=3.0)]
  assert comparison.error_at(front, 100.0) == pytest.approx(2.0)
  assert comparison.error_at(front, 10.0) == pytest.approx(1.0)
  assert comparison.error_at(front, 5.0) is None and comparison.error_at(front, 2000.0) is None


def test_error_at_does_not_read_across_a_failed_point():
  front = [dict(compression=c, test_error=e) for c, e in ((10.0, 1.3), (90.0, 2.3), (300.0, 69.1))]
  assert comparison.error_at(front, 50.0) == pytest.approx(1.3 + math.log(5) / math.log(9))
  assert comparison.error_at(front, 115.0) is None and comparison.error_at(front, 300.0) is None
  front[2]["test_error"] = 12.0  # under 10× the best (1.3%): a steep front, not a failure
  assert comparison.error_at(front, 300.0) == pytest.approx(12.0)


@pytest.mark.parametrize("name", sorted(sweeps.EXPERIMENTS))
def test_every_trial_of_every_experiment_is_a_valid_config(name):
  import importlib

  from train import configuration
  experiment = sweeps.EXPERIMENTS[name]()
  for method in experiment.methods:
    stage, tuned = sweeps.tuning_stage(experiment, method)
    trials = [(stage, t) for t in sweeps.tune_trials(tuned)]
    trials += [(experiment, sweeps.Trial(method, "front", v, tuned.tune[1][0], 0))
               for v in sweeps.front_values(experiment, method)]
    for exp, trial in trials:
      config = importlib.import_module(exp.config[:-3].replace("/", ".")).get_config()
      config.update(trial.overrides(exp))
      configuration.validate_config(config)


def test_the_index_says_what_is_queued_and_shows_what_has_finished(experiment):
  text = report.index([report.summarize(experiment)])
  assert "Queued, no trial finished yet (method M, dense)" in text and "![toy]" not in text
  _finish(experiment, sweeps.tune_trials(experiment.methods[1])[0], 0.9, 0.9, 1.0)
  text = report.index([report.summarize(experiment)])
  assert "### Reference points" in text and "![toy](sweeps/toy.png)" in text
  assert "--experiment toy`" in text


def test_archived_outcomes_stand_in_for_workdirs_that_are_gone(experiment):
  import dataclasses
  import shutil
  m = dataclasses.replace(experiment.methods[0], overrides=dict(optimizer="sgd",
                                                                freeze_zeros_epoch=1))
  experiment = dataclasses.replace(experiment, methods=(m, experiment.methods[1]))
  low, high = sweeps.tune_trials(m)
  _finish(experiment, low, val=0.90, test=0.99, compression=10.0)
  _finish(experiment, high, val=0.95, test=0.97, compression=20.0)
  ready, _ = sweeps.plan(experiment, [m])
  _finish(experiment, ready[0], val=0.9, test=0.9, compression=50.0)
  diverged = sweeps.tune_trials(experiment.methods[1])[0]
  sweeps.workdir(experiment, diverged).mkdir(parents=True)
  (sweeps.workdir(experiment, diverged) / sweeps.DIVERGED).write_text("Training diverged\n")
  cut = ready[1]
  _finish(experiment, cut, val=0.9, test=0.9, compression=50.0, epoch=1)  # not finished
  before = report.summarize(experiment)
  assert sweeps.archive(experiment) == 4 and sweeps.archive(experiment) == 0  # no rewrite
  entries = json.loads(sweeps.archive_path(experiment).read_text())
  assert set(entries) == {low.id, high.id, ready[0].id, diverged.id}
  assert [r["epoch"] for r in entries[high.id]["records"]] == [1, 2]  # retraining began at 1

  shutil.rmtree(sweeps.outcomes.RUNS)  # a new machine: no workdirs
  assert report.summarize(experiment) == before
  assert sweeps.record_at(experiment, high, 1)["epoch"] == 1
  assert sweeps.finished(experiment, diverged) and not sweeps.finished(experiment, cut)
  assert cut in sweeps.plan(experiment, [m])[0] and ready[0] not in sweeps.plan(experiment, [m])[0]


@pytest.mark.parametrize("val, refined", [
    ({0.25: 0.90, 0.5: 0.91, 1.0: 0.92, 2.0: 0.93}, 4.0),    # best on the upper edge: a step on
    ({0.25: 0.95, 0.5: 0.91, 1.0: 0.92, 2.0: 0.93}, 0.125),  # on the lower edge
    ({0.25: 0.90, 0.5: 0.94, 1.0: 0.92, 2.0: 0.93}, 0.707),  # inside: towards its better neighbour
    ({0.25: 0.93, 0.5: 0.94, 1.0: 0.92, 2.0: None}, 0.354),  # None: diverged, never the better
    ({0.25: 0.90, 0.5: 0.91, 1.0: 0.94, 2.0: None}, 0.707),
])
def test_every_method_gets_one_refining_trial_after_its_grid(experiment, val, refined):
  import dataclasses
  m = sweeps.Method("r", "refined", dict(optimizer="sgd"), "pruning_sparsity", 0.9, (0.5, 0.9),
                    ("learning_rate", tuple(val)))
  experiment = dataclasses.replace(experiment, methods=(m,))
  for trial in sweeps.tune_trials(m)[:-1]:
    _finish(experiment, trial, val[trial.setting], 0.9, 10.0)
  assert sweeps.refine_trials(experiment, m) == []  # the grid has not told where yet
  last = sweeps.tune_trials(m)[-1]
  if val[last.setting] is None:
    sweeps.workdir(experiment, last).mkdir(parents=True)
    (sweeps.workdir(experiment, last) / sweeps.DIVERGED).write_text("Training diverged\n")
  else:
    _finish(experiment, last, val[last.setting], 0.9, 10.0)
  [extra] = sweeps.refine_trials(experiment, m)
  assert extra.setting == refined and extra.stage == "tune" and extra.seed == 0
  ready, waiting = sweeps.plan(experiment, [m])
  assert ready == [extra] and len(waiting) == 1 + 2  # the front and the seeds wait for it
  assert sweeps.tuned_setting(experiment, m) is None
  _finish(experiment, extra, 0.999, 0.5, 10.0)  # better than the whole grid: it is chosen
  assert sweeps.tuned_setting(experiment, m) == refined
  summary = report.summarize(experiment)
  assert summary["methods"]["r"]["tuned"]["values"] == sorted([*val, refined])
  edge = refined in (min(val), max(val)) or refined < min(val) or refined > max(val)
  assert ("on the edge" in report.markdown(summary)) == edge


def test_no_refinement_when_every_grid_value_diverged(experiment):
  import dataclasses
  m = dataclasses.replace(experiment.methods[0], refine=True)
  experiment = dataclasses.replace(experiment, methods=(m,))
  for trial in sweeps.tune_trials(m):
    sweeps.workdir(experiment, trial).mkdir(parents=True)
    (sweeps.workdir(experiment, trial) / sweeps.DIVERGED).write_text("Training diverged\n")
  assert sweeps.refine_trials(experiment, m) == []
  assert sweeps.plan(experiment, [m]) == ([], [])


def test_a_signal_to_the_runner_stops_each_training_once_and_exits(experiment, monkeypatch,
                                                                 quick):
  import os
  import signal
  import threading
  signals, launched = [], []
  both = threading.Barrier(2)

  class Running:  # a training that runs until it is told to stop
    returncode = None

    def __init__(self, trial):
      self.trial = trial

    def poll(self):
      return self.returncode

    def send_signal(self, signum):
      signals.append((self.trial.id, signum))
      self.returncode = 128 + signum  # it checkpoints and exits

    def kill(self):
      raise AssertionError("a training that stops in time is not killed")

  def launch(exp, trial, cores):
    launched.append(trial.id)
    if both.wait() == 0:  # both workers busy: the runner gets SIGTERM (kill, or a cluster)
      os.kill(os.getpid(), signal.SIGTERM)
    return Running(trial)

  monkeypatch.setattr(sweeps.engine, "launch", launch)
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as exit_info:
    _sweep([(experiment, list(experiment.methods))], workers=2).run()
  assert exit_info.value.code == 128 + signal.SIGTERM
  assert len(launched) == 2  # nothing started after the signal
  assert sorted(signals) == sorted((t, signal.SIGTERM) for t in launched)  # one SIGTERM each
  assert signal.getsignal(signal.SIGTERM) == before
  assert not sweeps.finished(experiment, sweeps.tune_trials(experiment.methods[0])[0])


def test_workers_whose_sources_change_stop_their_trainings_and_start_again(
    experiment, monkeypatch, quick, capsys):
  import signal
  signals, launched = [], []
  sources = ["before"]
  monkeypatch.setattr(sweeps.engine, "IMPORTED", "before")
  monkeypatch.setattr(sweeps.engine, "sources_fingerprint", lambda: sources[0])
  monkeypatch.setattr(sweeps.engine, "SOURCES_CHECK_S", 0.0)

  class Running:  # a training that runs until it is told to stop
    returncode = None

    def __init__(self, trial):
      self.trial = trial

    def poll(self):
      sources[0] = "after"  # a checkout of a newer commit while it trains
      return self.returncode

    def send_signal(self, signum):
      signals.append((self.trial.id, signum))
      self.returncode = 128 + signum

  def launch(exp, trial, cores):
    launched.append(trial.id)
    return Running(trial)

  monkeypatch.setattr(sweeps.engine, "launch", launch)
  with pytest.raises(sweeps.engine.SourcesChanged):
    _sweep([(experiment, list(experiment.methods))], workers=1).run()
  assert len(launched) == 1 and signals == [(launched[0], signal.SIGTERM)]
  assert "changed since the workers started" in capsys.readouterr().out


def test_no_trial_starts_under_definitions_that_changed_since_the_last_look(
    experiment, monkeypatch, quick):
  import optuna
  sources, launched = ["before"], []
  monkeypatch.setattr(sweeps.engine, "IMPORTED", "before")
  monkeypatch.setattr(sweeps.engine, "sources_fingerprint", lambda: sources[0])
  monkeypatch.setattr(sweeps.engine, "SOURCES_CHECK_S", 1e9)  # no look while trainings run

  class Finished:
    returncode = 0

    def __init__(self, trial):
      self.trial = trial

    def poll(self):
      sources[0] = "after"  # changed while it trained, unseen until the next pick
      _finish(experiment, self.trial, val=0.9, test=0.9, compression=10.0)
      return 0

  def launch(exp, trial, cores):
    launched.append(trial.id)
    return Finished(trial)

  monkeypatch.setattr(sweeps.engine, "launch", launch)
  sweep = _sweep([(experiment, list(experiment.methods))])
  with pytest.raises(sweeps.engine.SourcesChanged):
    sweep.run()
  assert len(launched) == 1  # the look before the next pick saw it: nothing enqueued either
  assert len(sweep.studies[experiment.id].get_trials()) == 1

  # Changed between another worker's pick and its launch: nothing launches, and the trial is
  # taken up again by the restarted runner.
  sources[0], launched[:] = "before", []
  monkeypatch.setattr(sweeps.engine, "IMPORTED", "before")
  again = sweeps.Sweep(sweep.queue, sweep.storage)
  real_pick = again.pick

  def pick():
    picked = real_pick()
    sources[0] = "after"
    return picked

  again.pick = pick
  with pytest.raises(sweeps.engine.SourcesChanged):
    again.run()
  assert launched == []
  stopped = again.studies[experiment.id].get_trials()[-1]
  assert stopped.state == optuna.trial.TrialState.FAIL and "outcome" not in stopped.user_attrs
  monkeypatch.setattr(sweeps.engine, "IMPORTED", "after")
  restarted = sweeps.Sweep(sweep.queue, sweep.storage)
  monkeypatch.setattr(restarted, "work", lambda cores: "finished")
  assert restarted.pick()[1].id == stopped.user_attrs["trial"]


def test_the_sources_fingerprint_sees_an_edited_or_removed_file_and_nothing_else(
    tmp_path, monkeypatch):
  import optuna
  (tmp_path / "catalogue.py").write_text("LR = 0.1\n")
  (tmp_path / "policy.py").write_text("\n")
  (tmp_path / "notes.txt").write_text("not a source\n")
  monkeypatch.setattr(sweeps.engine, "SOURCES", tmp_path)
  monkeypatch.setattr(sweeps.engine, "IMPORTED", sweeps.engine.sources_fingerprint())
  sweep = sweeps.Sweep([], optuna.storages.InMemoryStorage())
  (tmp_path / "notes.txt").write_text("edited\n")
  sweep.check_sources(now=True)
  assert not sweep.sources_changed and not sweep.stopping
  (tmp_path / "catalogue.py").write_text("LR = 0.2\n")
  sweep.check_sources()  # (looked a moment ago: not yet)
  assert not sweep.sources_changed
  sweep.check_sources(now=True)
  assert sweep.sources_changed and sweep.stopping
  before = sweeps.engine.sources_fingerprint()
  (tmp_path / "policy.py").unlink()
  (tmp_path / "policy.py").symlink_to(tmp_path / "gone")  # listed, unreadable: mid-checkout
  assert sweeps.engine.sources_fingerprint() != before


def test_the_runner_starts_again_once_the_changed_sources_settle_and_plan(monkeypatch, capsys):
  fingerprints = iter(["a", "b",  # changing still
                       "b", "b",  # settled, but the plan fails (a broken edit)
                       "b", "c",  # waiting for the next change
                       "c", "c"])  # settled, and it plans
  monkeypatch.setattr(sweeps.engine, "sources_fingerprint", lambda: next(fingerprints))
  monkeypatch.setattr(sweeps.cli.time, "sleep", lambda _: None)
  plans, execs = [], []

  def run(command, **kwargs):
    plans.append(command)
    return subprocess.CompletedProcess(command, len(plans) == 1 and 1 or 0, "",
                                       "SyntaxError: invalid syntax")

  class Executed(Exception):
    pass

  def execv(path, args):
    execs.append((path, args))
    raise Executed

  monkeypatch.setattr(sweeps.cli.subprocess, "run", run)
  monkeypatch.setattr(sweeps.cli.os, "execv", execv)
  command = [sys.executable, "-m", "benchmarks.sweeps", "--experiment", "x", "--workers", "1"]
  with pytest.raises(Executed):
    sweeps.cli.restart(command)
  assert plans == [command + ["--plan"]] * 2 and execs == [(sys.executable, command)]
  assert "SyntaxError" in capsys.readouterr().out

  restarts = []  # the command line hands its own arguments over
  monkeypatch.setattr(sweeps.engine.Sweep, "run", lambda self: (_ for _ in ()).throw(
      sweeps.engine.SourcesChanged("changed")))
  monkeypatch.setattr(sweeps.cli, "restart", restarts.append)
  argv = ["--experiment", "lenet300100_mnist", "--workers", "1", "--storage", "sqlite://"]
  sweeps.main(argv)
  assert restarts == [[sys.executable, "-m", "benchmarks.sweeps", *argv]]


class _Stubborn:
  """A training that ignores SIGTERM until it is killed."""
  returncode = None

  def __init__(self, trial, log):
    self.trial, self.log = trial, log

  def poll(self):
    return self.returncode

  def send_signal(self, signum):
    self.log.append(("signal", self.trial.id, signum))

  def kill(self):
    self.log.append(("kill", self.trial.id))
    self.returncode = -9

  def wait(self):
    return self.returncode


def test_a_second_signal_kills_a_training_that_does_not_stop(experiment, monkeypatch, quick):
  import os
  import signal
  log, sent = [], []
  sweep = _sweep([(experiment, list(experiment.methods))], workers=1)

  def launch(exp, trial, cores):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
    proc = _Stubborn(trial, log)
    original = proc.poll

    def poll():  # the user presses Ctrl-C again once the training has been asked to stop
      if log and not sent:  # (signals sent at once could arrive as one)
        sent.append(1)
        os.kill(os.getpid(), signal.SIGINT)
      return original()
    proc.poll = poll
    return proc

  monkeypatch.setattr(sweeps.engine, "launch", launch)
  monkeypatch.setattr(sweeps.engine, "STOP_GRACE_S", 60.0)  # (a failure, not a hang)
  with pytest.raises(SystemExit) as exit_info:
    sweep.run()
  assert exit_info.value.code == 128 + signal.SIGINT
  assert [entry[0] for entry in log] == ["signal", "kill"] and sweep.signals == [2, 2]


def test_a_failing_runner_stops_its_trainings(experiment, monkeypatch, quick):
  import signal
  log, launched = [], []

  def launch(exp, trial, cores):
    launched.append(trial)
    return _Stubborn(trial, log)

  monkeypatch.setattr(sweeps.engine, "launch", launch)
  monkeypatch.setattr(sweeps.engine, "STOP_GRACE_S", 0.0)
  real_plan = sweeps.policy.plan

  def plan(exp, methods):
    if len(launched) >= 2:  # both trainings started: the idle third worker's look fails
      raise OSError("disk full")
    return real_plan(exp, methods)

  monkeypatch.setattr(sweeps.policy, "plan", plan)
  with pytest.raises(OSError, match="disk full"):
    _sweep([(experiment, [experiment.methods[0]])], workers=3).run()
  signalled = {t for kind, t, *_ in log if kind == "signal"}
  killed = {t for kind, t, *_ in log if kind == "kill"}
  assert len(signalled) == 2 and killed == signalled  # (the grace period is 0 here)
  assert all(s == signal.SIGTERM for kind, _, *s in log if kind == "signal" for s in s)


def test_a_workdir_that_another_training_holds_is_left_alone(experiment):
  import fcntl
  first, second = sweeps.tune_trials(experiment.methods[0])
  directory = sweeps.workdir(experiment, first)
  directory.mkdir(parents=True)
  sweep = _sweep([(experiment, [experiment.methods[0]])])
  with open(directory / ".running.process0", "a") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    assert sweeps.engine.training_elsewhere(directory)
    assert sweep.pick() == (experiment, second)
    assert sweep.pick() == "busy"  # the first is not enqueued while its lock is held
  assert not sweeps.engine.training_elsewhere(directory)  # released with its holder
  assert sweep.pick() == (experiment, first)
  assert [t.user_attrs["trial"] for t in sweep.studies[experiment.id].trials] == [
      second.id, first.id]


def test_the_runner_does_not_call_done_what_another_runner_trains(experiment):
  import dataclasses
  dense = dataclasses.replace(experiment.methods[1], seeds=())
  experiment = dataclasses.replace(experiment, methods=(dense,))
  trial = sweeps.tune_trials(dense)[0]
  queue = [(experiment, [dense])]
  sweep = _sweep(queue)
  other = sweeps.Sweep(queue, sweep.storage)  # another worker on the same storage
  assert other.pick() == (experiment, trial)
  assert sweep.pick() == (experiment, sweeps.tune_trials(dense)[1])
  assert sweep.pick() == "busy"  # both held (enqueued): not "finished"
  for t in sweeps.tune_trials(dense):
    _finish(experiment, t, 0.9, 0.9, 1.0)
  from optuna.trial import TrialState
  for study_trial in sweep.studies[experiment.id].trials:  # their workers end them
    sweep.storage.set_trial_state_values(study_trial._trial_id, TrialState.COMPLETE, [0.9])
  assert sweep.pick() == "finished"


def test_an_archived_outcome_counts_only_for_the_definition_it_trained(experiment):
  import dataclasses
  import shutil
  trial = sweeps.tune_trials(experiment.methods[1])[0]
  _finish(experiment, trial, 0.9, 0.9, 1.0)
  assert sweeps.archive(experiment) == 1
  shutil.rmtree(sweeps.outcomes.RUNS)
  assert sweeps.finished(experiment, trial)
  longer = dataclasses.replace(experiment, overrides=dict(experiment.overrides, num_epochs=3))
  assert not sweeps.finished(longer, trial)
  other = dataclasses.replace(experiment, methods=(experiment.methods[0], dataclasses.replace(
      experiment.methods[1], overrides=dict(optimizer="sgd", momentum=0.5))))
  assert not sweeps.finished(other, sweeps.tune_trials(other.methods[1])[0])


@pytest.mark.parametrize("grid, val, refined", [
    ((64, 128, 256), (0.9, 0.91, 0.92), 512),  # integers stay integers
    ((1.0, 1.002, 1.004), (0.9, 0.92, 0.91), 1.003),  # more digits rather than a repeat
    ((0.0, 1e-4, 5e-4), (0.9, 0.91, 0.92), None),  # not geometric: no refinement
    ((True, False), (0.9, 0.91), None),
])
def test_the_refinement_only_steps_where_a_geometric_step_makes_sense(experiment, grid, val,
                                                                     refined):
  import dataclasses
  m = sweeps.Method("r", "refined", dict(optimizer="sgd"), None, None, (), ("batch_size", grid))
  experiment = dataclasses.replace(experiment, methods=(m,))
  for trial, v in zip(sweeps.tune_trials(m), val):
    _finish(experiment, trial, v, 0.9, 1.0)
  extra = next(iter(sweeps.refine_trials(experiment, m)), None)
  assert (None if extra is None else extra.setting) == refined
  if extra is not None:
    assert type(extra.setting) is type(grid[0])
  assert sweeps.tuned_setting(experiment, m) is (None if extra else grid[val.index(max(val))])


def _toy_tuned_apart(epochs=4):
  """The toy experiment at ``epochs``, tuned at a quarter of them (its schedule scales)."""
  import dataclasses

  def build(epochs):
    methods = tuple(dataclasses.replace(m, overrides=dict(m.overrides, pruning_end_epoch=epochs))
                    for m in _experiment().methods)
    return dataclasses.replace(_experiment(), id=f"toy{epochs}", methods=methods,
                               overrides=dict(num_epochs=epochs))
  return sweeps.with_tuning(build(epochs), epochs // 4, build)


def test_a_method_tuned_at_a_shorter_budget_trains_its_reference_at_the_full_one(experiment):
  import shutil
  full = _toy_tuned_apart()
  stage = full.tuning
  assert stage.id == "toy4_tuning" and stage.overrides["num_epochs"] == 1
  m = full.methods[0]
  assert sweeps.plan(full, [m]) == ([], [sweeps.Trial(m, "front", v, None, 0)
                                         for v in (0.5, 0.9, 0.99)]
                                    + [sweeps.Trial(m, "seed", 0.9, None, s) for s in (1, 2)])
  tuning, _ = sweeps.plan(stage, list(stage.methods))
  assert [t.setting for t in tuning] == [0.1, 0.2, 0.1, 0.2] and all(
      t.stage == "tune" and t.seed == 0 for t in tuning)
  assert all(t.overrides(stage)["pruning_end_epoch"] == 1 for t in tuning[:2])
  low, high = tuning[:2]
  _finish(stage, low, val=0.90, test=0.99, compression=10.0, epoch=1)
  _finish(stage, high, val=0.95, test=0.80, compression=10.0, epoch=1)
  assert sweeps.tuned_setting(full, m) == 0.2
  ready, waiting = sweeps.plan(full, [m])
  assert not (sweeps.outcomes.RUNS / full.id).exists()  # the tuning trained in its own directory
  for trial in ready[1:]:  # all but the first front point; then the reference's seeds
    _finish(full, trial, 0.9, 0.97 if trial.knob_value == 0.9 else 0.9, 10.0, epoch=4)
  partial = report.summarize(full)
  assert [r["seed"] for r in partial["methods"]["m"]["seed_rows"]] == [1, 2]
  assert partial["missing"] == [ready[0].id] + [f"toy4_tuning/{t.id}" for t in tuning[2:]]
  reference = next(t for t in ready if t.knob_value == 0.9 and t.seed == 0)
  (sweeps.workdir(full, reference) / "metrics.jsonl").unlink()  # the reference unfinished
  partial = report.summarize(full)
  assert [r["seed"] for r in partial["methods"]["m"]["seed_rows"]] == [1, 2]
  assert partial["missing"].count(reference.id) == 1
  assert not waiting and {(t.stage, t.knob_value, t.seed) for t in ready} == {
      ("front", 0.5, 0), ("front", 0.9, 0), ("front", 0.99, 0), ("seed", 0.9, 1),
      ("seed", 0.9, 2)}  # the reference too: its tune trial trained 1 epoch, not 4
  assert all(t.overrides(full)["pruning_end_epoch"] == 4 for t in ready)
  for trial in ready:
    _finish(full, trial, 0.9, 0.97 if trial.knob_value == 0.9 else 0.9, 10.0, epoch=4)
  summary = report.summarize(full)
  entry = summary["methods"]["m"]
  assert summary["tune_epochs"] == 1 and summary["epochs"] == 4
  assert [r["val_error"] for r in entry["tune"]] == pytest.approx([10.0, 5.0])
  assert entry["reference"]["seeds"] == [0, 1, 2]
  assert entry["reference"]["test_error_mean"] == pytest.approx(3.0)  # the full-budget trials
  assert summary["missing"] == [f"toy4_tuning/{t.id}" for t in tuning[2:]]
  assert "each tune trial trained 1 epochs, not 4" in report.markdown(summary)
  assert sweeps.archive(full) == 2 + 5  # the tuning stage's archive as well as its own
  shutil.rmtree(sweeps.outcomes.RUNS)
  assert sweeps.tuned_setting(full, m) == 0.2 and report.summarize(full) == summary


def test_the_runner_queues_a_tuning_stage_before_its_experiment(experiment, capsys):
  sweeps.main(["--experiment", "lenet5_mnist", "--plan", "--methods", "xrda"])
  rows = [line.split() for line in capsys.readouterr().out.splitlines()]
  assert [(state, exp) for state, exp, _ in rows] == (
      [("ready", "lenet5_mnist_tuning")] * 3 + [("waiting", "lenet5_mnist")] * 6)
  full = sweeps.EXPERIMENTS["lenet5_mnist"]()
  assert full.tuning.overrides["num_epochs"] == full.overrides["num_epochs"] // 4


def test_the_plot_keeps_a_failed_point_from_squashing_the_others(tmp_path):
  front = [dict(compression=c, test_error=e) for c, e in ((10.0, 1.3), (50.0, 1.6), (300.0, 69.1))]
  summary = dict(label="Toy", epochs=2, published=[dict(method="P", error=1.9, compression=100.0,
                                                        source="a paper")],
                 methods={"m": dict(label="method M", knob="l1", front=front)})
  low, high = report.plot(summary, tmp_path / "toy.png")
  assert (tmp_path / "toy.png").stat().st_size > 0
  assert low <= 1.3 and 1.9 <= high < 10  # 4× the median error, not 69%
  summary["methods"]["m"]["front"] = front[:2]
  assert 1.9 <= report.plot(summary, tmp_path / "toy.png")[1] < 2.2  # no failure: no cap


def test_the_plot_draws_seeded_points_beside_the_fronts_and_no_two_methods_alike(
    tmp_path, monkeypatch):
  import matplotlib.figure  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))

  def point(c, mean, std):
    return dict(knob_value=1 - 1 / c, seeds=[1, 2], compression_weights_mean=c,
                test_error_mean=mean, test_error_std=std)

  front = [dict(compression=10.0, compression_weights=10.0, test_error=1.4)]
  methods = {f"m{i}": dict(label=f"M{i}", knob="s", front=front) for i in range(11)}
  methods["m1"]["points"] = [point(10.0, 1.3, 0.05), point(50.0, 1.6, 0.1)]
  summary = dict(label="Toy", epochs=2, published=[], methods=methods)
  report.plot(summary, tmp_path / "toy.png")
  fronts, equal = saved[-1].axes[:2]
  [bars] = equal.containers
  assert [tuple(x) for x in bars.lines[0].get_xydata()] == [(10.0, 1.3), (50.0, 1.6)]
  assert [t.get_text() for t in equal.get_xticklabels()] == ["10×", "50×"]
  styles = {(line.get_color(), line.get_marker(), line.get_linestyle()) for line in fronts.lines}
  assert len(styles) == 11  # the eleventh method is not the first again
  del methods["m1"]["points"]
  report.plot(summary, tmp_path / "toy.png")
  assert len(saved[-1].axes) == 1  # nothing seeded: the fronts alone


def test_a_language_models_plot_is_on_its_perplexity_not_its_next_byte_error(
    tmp_path, monkeypatch):
  import matplotlib.figure  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
  front = [dict(compression=c, compression_weights=c, test_error=e, test_perplexity=p)
           for c, e, p in ((2.0, 48.0, 4.1), (10.0, 52.0, 4.6))]
  point = dict(knob_value=0.9, seeds=[1, 2], compression_weights_mean=10.0, test_error_mean=52.5,
               test_error_std=0.4, test_perplexity_mean=4.65, test_perplexity_std=0.05)
  summary = dict(label="LM", epochs=2, published=[], methods={
      "dense": dict(label="dense", knob=None, front=[dict(compression=1.0, test_error=45.0,
                                                          test_perplexity=3.9)]),
      "m": dict(label="M", knob="s", front=front, points=[point])})
  low, high = report.plot(summary, tmp_path / "lm.png")
  fronts, equal = saved[-1].axes[:2]
  assert [tuple(xy) for xy in fronts.lines[-1].get_xydata()] == [(2.0, 4.1), (10.0, 4.6)]
  [bars] = equal.containers
  assert [tuple(xy) for xy in bars.lines[0].get_xydata()] == [(10.0, 4.65)]
  assert fronts.lines[0].get_ydata()[0] == 3.9  # dense, across the plot
  assert "perplexity" in fronts.get_ylabel() and low < 3.9 and 4.7 < high < 10


def test_the_plot_labels_a_trend_by_its_knob_and_a_front_not(tmp_path, monkeypatch):
  import matplotlib.axes  # pylint: disable=g-import-not-at-top
  texts = []
  original = matplotlib.axes.Axes.annotate

  def annotate(self, text, *args, **kwargs):
    texts.append(text)
    return original(self, text, *args, **kwargs)

  monkeypatch.setattr(matplotlib.axes.Axes, "annotate", annotate)
  trend = [dict(compression=c, test_error=e, knob_value=s)
           for c, e, s in ((4.0, 2.0, 1.0), (1.5, 1.8, 3.0), (1.1, 1.9, 10.0))]
  summary = dict(label="Toy", epochs=2, published=[],
                 methods={"t": dict(label="T", knob="init_scale", trend=True, front=trend),
                          "f": dict(label="F", knob="l1", front=[dict(compression=9.0,
                                                                      test_error=1.7,
                                                                      knob_value=1e-5)])})
  report.plot(summary, tmp_path / "toy.png")
  assert texts == ["init_scale 1", "init_scale 3", "init_scale 10"]


def test_the_plot_stacks_the_labels_of_failed_points_that_stand_close(tmp_path, monkeypatch):
  import matplotlib.axes  # pylint: disable=g-import-not-at-top
  labels = {}
  original = matplotlib.axes.Axes.annotate

  def annotate(self, text, *args, **kwargs):
    labels[text] = kwargs.get("xytext")
    return original(self, text, *args, **kwargs)

  monkeypatch.setattr(matplotlib.axes.Axes, "annotate", annotate)
  ok = [(10.0, 1.3), (50.0, 1.6)]
  fronts = {"a": ok + [(283.0, 69.1)], "b": ok + [(283.0, 6.87)], "c": ok + [(330.0, 88.65)],
            "d": ok + [(10_000.0, 50.0)]}
  summary = dict(label="Toy", epochs=2, published=[], methods={
      k: dict(label=k, knob="s", front=[dict(compression=c, test_error=e) for c, e in f])
      for k, f in fronts.items()})
  report.plot(summary, tmp_path / "toy.png")
  close = [labels[t] for t in ("6.87%", "69.10%", "88.65%")]
  assert len({offset for offset in close}) == 3  # three rows, not one on top of another
  assert labels["50.00%"] == labels["6.87%"]  # a decade away: back to the first row


def test_a_setting_whose_full_budget_run_diverged_gives_way_to_the_next_best(experiment):
  import shutil
  full = _toy_tuned_apart()
  stage, m = full.tuning, full.methods[0]
  low, high = sweeps.plan(stage, list(stage.methods))[0][:2]
  _finish(stage, low, val=0.90, test=0.99, compression=10.0, epoch=1)
  _finish(stage, high, val=0.95, test=0.80, compression=10.0, epoch=1)
  assert sweeps.tuned_setting(full, m) == 0.2
  reference = sweeps.Trial(m, "front", m.reference, 0.2, 0)
  assert reference in sweeps.plan(full, [m])[0]
  sweeps.workdir(full, reference).mkdir(parents=True)
  (sweeps.workdir(full, reference) / sweeps.DIVERGED).write_text("Training diverged\n")
  assert sweeps.tuned_setting(full, m) == 0.1
  ready, _ = sweeps.plan(full, [m])
  assert ready and all(t.setting == 0.1 for t in ready)
  fallback = sweeps.Trial(m, "front", m.reference, 0.1, 0)
  sweeps.workdir(full, fallback).mkdir(parents=True)
  (sweeps.workdir(full, fallback) / sweeps.DIVERGED).write_text("Training diverged\n")
  assert sweeps.tuned_setting(full, m) is None  # every setting diverged at the full budget
  assert sweeps.plan(full, [m]) == ([], [])  # nothing left to wait for
  summary = report.summarize(full)
  assert summary["methods"]["m"]["tuned"]["diverged_at_full_budget"] == [0.1, 0.2]
  shutil.rmtree(sweeps.workdir(full, fallback))
  summary = report.summarize(full)
  assert summary["methods"]["m"]["tuned"]["chosen"] == 0.1
  assert summary["methods"]["m"]["tuned"]["diverged_at_full_budget"] == [0.2]
  assert "0.2 diverged at the full budget" in report.markdown(summary)
  assert reference.id in summary["diverged"]


def test_the_runner_runs_seed_by_seed_and_a_full_budget_run_before_other_tune_trials(
    experiment):
  full = _toy_tuned_apart()
  stage = full.tuning
  first, second = stage.methods
  for trial in sweeps.tune_trials(first):  # the first method's tuning is done, the second's not
    _finish(stage, trial, val=0.9, test=0.9, compression=10.0, epoch=1)
  later = _toy_tuned_apart(8)  # queued after: its 2-epoch tune trials wait for toy4's 1-epoch
  queue = [(stage, list(stage.methods)), (full, list(full.methods)),
           (later.tuning, list(later.tuning.methods)), (later, list(later.methods))]
  sweep = _sweep(queue)
  ready, _ = sweep.plan()
  # The first method's seed-0 front, the second's tune trials (seed 0, shorter), then seeds 1-2.
  assert [(e.id, t.method.id, t.seed) for e, t in ready] == [("toy4", first.id, 0)] * 3 + [
      ("toy4_tuning", second.id, 0)] * 2 + [("toy4", first.id, 1), ("toy4", first.id, 2)] + [
          ("toy8_tuning", first.id, 0), ("toy8_tuning", first.id, 0),
          ("toy8_tuning", second.id, 0), ("toy8_tuning", second.id, 0)]
  picked = sweep.pick()
  assert picked[0].id == "toy4" and picked[1].method.id == first.id


def test_the_runner_trains_the_compared_methods_seed_by_seed_and_ablations_last(experiment):
  import dataclasses
  m = experiment.methods[0]
  methods = (m, dataclasses.replace(m, id="n"), dataclasses.replace(m, id="a", tuned_as="m"))
  toy = dataclasses.replace(experiment, methods=methods)
  for method in methods[:2]:
    for trial in sweeps.tune_trials(method):
      _finish(toy, trial, val=0.9, test=0.9, compression=10.0)
  ready, _ = _sweep([(toy, list(methods))]).plan()
  order = [(t.method.id, t.seed) for _, t in ready]
  # m and n each get seed 1 before either gets seed 2; the ablation after both.
  assert order == [("m", 0)] * 2 + [("n", 0)] * 2 + [("m", 1), ("n", 1), ("m", 2), ("n", 2)] + [
      ("a", 0)] * 3 + [("a", 1), ("a", 2)]


def test_the_readmes_headline_table_is_the_one_the_report_writes_from_the_archive():
  # `python -m benchmarks.report --all` writes it; a figure typed into the README fails here.
  text = report.README.read_text()
  assert report.README_BEGIN in text and report.README_END in text
  table = report.headline(report.archived_summaries())
  assert table.count("\n") >= 3  # the header, its rule, and at least one experiment
  assert report.readme_with(text, table) == text, (
      "README.md's headline table is out of date: run python -m benchmarks.report --all")


def test_the_readmes_equal_sparsity_lines_need_seeds_on_both_sides():
  def point(value, mean, std):
    return {"knob_value": value, "seeds": [1, 2, 3], "test_error_mean": mean,
            "test_error_std": std, "compression_weights_mean": 1 / (1 - value)}
  summary = {"label": "Toy", "experiment": "toy", "methods": {
      "xrda_target": {"label": "xRDA", "points": [point(0.9, 1.0, 0.1), point(0.98, 2.0, 0.1)]},
      "xrda_uniform": {"label": "ablation", "points": [point(0.9, 9.0, 0.1)]},
      "gmp_erk": {"label": "ERK", "points": [point(0.9, 1.5, 0.1), point(0.98, 2.0, None)]}}}
  lines = [ln for ln in report.equal_headline([summary]).splitlines() if ln.startswith("| [")]
  # 0.98: one pruning seed, no verdict; the ablation is xrda's own, not another method.
  assert len(lines) == 1 and "| 10× |" in lines[0] and "xRDA leads (-0.50, spread 0.20)" in lines[0]
  assert report.equal_headline([{**summary, "methods": {}}]) == ""


def test_compression_is_counted_on_weights_too_and_published_points_read_that_count():
  record = {"compression": 266610 / 5734, "layers": {
      "layers/0/kernel": dict(nonzeros=5000, total=235200), "layers/0/bias": dict(nonzeros=0,
                                                                                  total=300),
      "layers/1/kernel": dict(nonzeros=324, total=31000)}}
  assert report.weights_compression(record) == pytest.approx(266200 / 5324)  # biases left out
  assert report.weights_compression({"compression": 2.0}) is None  # no per-layer counts logged
  front = [dict(compression=c, compression_weights=2 * c, test_error=e)
           for c, e in ((2.0, 1.0), (10.0, 2.0), (100.0, 3.0))]
  assert comparison.error_at(front, 20.0, "compression_weights") == pytest.approx(2.0)
  assert comparison.error_at(front, 20.0) == pytest.approx(2.0 + math.log(2) / math.log(10))
  front[1]["compression_weights"] = None  # a point without the count is left out, not guessed
  assert comparison.error_at(front, 20.0, "compression_weights") == pytest.approx(
      1.0 + math.log(5) / math.log(50) * 2.0)


def _two_knob_method(**kwargs):
  return sweeps.Method("x", "two knobs", dict(optimizer="xrda"), "l1_sparsity", 0.9, (0.5, 0.9),
                       (("learning_rate", "momentum_timescale"),
                        tuple((lr, t) for lr in (1.0, 2.0) for t in (9.5, 19.0))), **kwargs)


def test_two_knobs_tuned_together_name_and_set_both(experiment):
  import dataclasses
  m = _two_knob_method(refine=False)
  experiment = dataclasses.replace(experiment, methods=(m,))
  grid = sweeps.tune_trials(m)
  assert [t.setting for t in grid] == [(1.0, 9.5), (1.0, 19.0), (2.0, 9.5), (2.0, 19.0)]
  assert grid[1].id == "x/l1_sparsity=0.9_learning_rate=1.0_momentum_timescale=19.0_seed=0"
  o = grid[1].overrides(experiment)
  assert (o["learning_rate"], o["momentum_timescale"], o["l1_sparsity"]) == (1.0, 19.0, 0.9)
  for trial, val in zip(grid, (0.90, 0.95, 0.91, 0.92)):
    _finish(experiment, trial, val, 0.9, 10.0)
  assert sweeps.tuned_setting(experiment, m) == (1.0, 19.0)
  front = [t for t in sweeps.plan(experiment, [m])[0] if t.stage == "front"]
  assert [(t.knob_value, t.settings) for t in front] == [
      (0.5, {"learning_rate": 1.0, "momentum_timescale": 19.0})]


@pytest.mark.parametrize("val, refined", [
    # (grid order: (1.0, 9.5), (1.0, 19.0), (2.0, 9.5), (2.0, 19.0); the best is (1.0, 19.0))
    ((0.90, 0.95, 0.91, 0.90), (0.5, 19.0)),   # both neighbours 0.05 worse: the first knob
    ((0.94, 0.95, 0.91, 0.90), (0.5, 19.0)),   # lr matters more (0.05 against T's 0.01)
    ((0.90, 0.95, 0.90, 0.94), (1.0, 38.0)),   # T matters more (0.05 against lr's 0.01)
    ((0.90, 0.91, 0.92, 0.99), (4.0, 19.0)),   # best (2.0, 19.0): lr 0.08 against T's 0.07
])
def test_a_two_knob_grid_refines_along_the_knob_that_mattered_most(experiment, val, refined):
  import dataclasses
  m = _two_knob_method()
  experiment = dataclasses.replace(experiment, methods=(m,))
  grid = sweeps.tune_trials(m)
  for trial, v in zip(grid[:-1], val[:-1]):
    _finish(experiment, trial, v, 0.9, 10.0)
  assert sweeps.refine_trials(experiment, m) == []
  _finish(experiment, grid[-1], val[-1], 0.9, 10.0)
  [extra] = sweeps.refine_trials(experiment, m)
  assert extra.setting == refined and extra.stage == "tune"
  assert sweeps.plan(experiment, [m])[0] == [extra]
  _finish(experiment, extra, 0.5, 0.9, 10.0)  # worse than the grid: the grid's best stays
  assert sweeps.tuned_setting(experiment, m) == grid[max(range(4), key=val.__getitem__)].setting


@pytest.mark.parametrize("refined_val, edge", [
    (0.90, (0.5, 19.0)),  # (1.0, 19.0) stays best: lr still on its edge, T inside (9.5 … 38)
    (0.99, (1.0, 76.0)),  # (1.0, 38.0) best: on T's edge (no lr tried beside it at T 38)
])
def test_a_choice_still_on_an_edge_gets_one_more_trial_beyond_it(experiment, refined_val, edge):
  import dataclasses
  m = _two_knob_method()
  experiment = dataclasses.replace(experiment, methods=(m,), edge_trial=True)
  grid = sweeps.tune_trials(m)
  for trial, v in zip(grid, (0.90, 0.95, 0.90, 0.94)):  # T mattered most: refined along it
    _finish(experiment, trial, v, 0.9, 10.0)
  [refined] = sweeps.refine_trials(experiment, m)
  assert refined.setting == (1.0, 38.0) and sweeps.tuned_setting(experiment, m) is None
  _finish(experiment, refined, refined_val, 0.9, 10.0)
  assert sweeps.tuned_setting(experiment, m) is None  # the edge trial is due
  [_, extra] = sweeps.refine_trials(experiment, m)
  assert extra.setting == edge and sweeps.plan(experiment, [m])[0] == [extra]
  _finish(experiment, extra, 0.999, 0.9, 10.0)  # best again, on an edge again
  assert len(sweeps.refine_trials(experiment, m)) == 2  # two at most
  assert sweeps.tuned_setting(experiment, m) == edge
  assert "by the same rule" in report.markdown(report.summarize(experiment))
  # Without the flag, the same outcomes name the first refinement alone.
  assert sweeps.refine_trials(dataclasses.replace(experiment, edge_trial=False), m) == [refined]


@pytest.mark.parametrize("val, refined, first_val, edge", [
    ({0.25: 0.90, 0.5: 0.91, 1.0: 0.92, 2.0: 0.93}, 4.0, 0.99, 8.0),  # best again: beyond it
    ({0.25: 0.90, 0.5: 0.91, 1.0: 0.94, 2.0: 0.93}, 1.41, 0.99, None),  # inside: none
    ({0.25: 0.90, 0.5: 0.91, 1.0: 0.92, 2.0: 0.93}, 4.0, None, None),  # 4.0 diverged: 2.0 inside
])
def test_one_knob_edge_trial(experiment, val, refined, first_val, edge):
  import dataclasses
  m = sweeps.Method("r", "refined", dict(optimizer="sgd"), "pruning_sparsity", 0.9, (0.5, 0.9),
                    ("learning_rate", tuple(val)))
  ablation = dataclasses.replace(m, id="a", tuned_as="r")
  experiment = dataclasses.replace(experiment, methods=(m, ablation), edge_trial=True)
  for trial in sweeps.tune_trials(m):
    _finish(experiment, trial, val[trial.setting], 0.9, 10.0)
  [first] = sweeps.refine_trials(experiment, m)
  assert first.setting == refined
  if first_val is None:
    sweeps.workdir(experiment, first).mkdir(parents=True)
    (sweeps.workdir(experiment, first) / sweeps.DIVERGED).write_text("Training diverged\n")
  else:
    _finish(experiment, first, first_val, 0.9, 10.0)
  extra = sweeps.refine_trials(experiment, m)[1:]
  assert [t.setting for t in extra] == ([] if edge is None else [edge])
  chosen = None if edge else (refined if first_val else max(val, key=val.__getitem__))
  assert sweeps.tuned_setting(experiment, m) == chosen
  # The ablation trains at its lender's choice, so it waits for the edge trial too.
  assert sweeps.refine_trials(experiment, ablation) == []
  assert bool(sweeps.plan(experiment, [ablation])[0]) == (chosen is not None)


def test_a_tuning_stage_trains_no_method_that_borrows_a_setting(experiment):
  """An ablation trains at its lender's choice at the full budget: the stage names none of it,
  and the full experiment names its reference (no tune trial trained it there)."""
  import dataclasses
  full = _toy_tuned_apart()
  m = full.methods[0]
  ablation = dataclasses.replace(m, id="a", tuned_as=m.id)
  full = dataclasses.replace(full, methods=(m, ablation), tuning=dataclasses.replace(
      full.tuning, methods=(full.tuning.methods[0], dataclasses.replace(
          full.tuning.methods[0], id="a", tuned_as=m.id))))
  stage = full.tuning
  for trial in sweeps.plan(stage, list(stage.methods))[0]:
    _finish(stage, trial, 0.9 + trial.setting / 10, 0.9, 10.0, epoch=1)
  assert sweeps.plan(stage, list(stage.methods)) == ([], [])
  assert sweeps.tuned_setting(full, ablation) == sweeps.tuned_setting(full, m) == 0.2
  ready, _ = sweeps.plan(full, [ablation])
  assert {(t.stage, t.knob_value, t.seed) for t in ready} == {
      ("front", 0.5, 0), ("front", 0.9, 0), ("front", 0.99, 0), ("seed", 0.9, 1),
      ("seed", 0.9, 2)}


@pytest.mark.parametrize("after_grid, chosen", [
    ({4.0: 0.94, 8.0: 0.95, 16.0: 0.94}, 8.0),  # the refining trial, two edge trials: turned
    ({4.0: 0.94, 8.0: 0.95, 16.0: 0.96, 32.0: 0.97}, 32.0),  # three edge trials spent: it stands
])
def test_several_edge_trials_step_on_while_the_choice_stays_on_an_edge(experiment, after_grid,
                                                                       chosen):
  import dataclasses
  m = sweeps.Method("r", "refined", dict(optimizer="sgd"), "pruning_sparsity", 0.9, (0.5, 0.9),
                    ("learning_rate", (0.25, 0.5, 1.0, 2.0)))
  experiment = dataclasses.replace(experiment, methods=(m,), edge_trial=3)
  for trial, v in zip(sweeps.tune_trials(m), (0.90, 0.91, 0.92, 0.93)):
    _finish(experiment, trial, v, 0.9, 10.0)
  for expected, v in after_grid.items():
    trial = sweeps.refine_trials(experiment, m)[-1]
    assert trial.setting == expected and sweeps.tuned_setting(experiment, m) is None
    _finish(experiment, trial, v, 0.9, 10.0)
  assert [t.setting for t in sweeps.refine_trials(experiment, m)] == list(after_grid)
  assert sweeps.tuned_setting(experiment, m) == chosen
  assert "one more a step beyond it, up to 3" in report.markdown(report.summarize(experiment))


def test_a_tuning_stage_apart_names_the_edge_trial_its_experiment_waits_for():
  stage_of = {e: sweeps.EXPERIMENTS[e]() for e in sweeps.EXPERIMENTS}
  for experiment in stage_of.values():  # the runner plans the stage as an experiment of its own
    if experiment.tuning is not None:
      assert experiment.tuning.edge_trial == experiment.edge_trial, experiment.id
  assert stage_of["lenet5_mnist"].edge_trial


def test_an_ablation_trains_at_its_lenders_setting_with_seeds_at_every_seeded_target(experiment):
  import dataclasses
  lender = _two_knob_method(refine=False, seeds=(1, 2), seeded_at=(0.5, 0.9))
  ablation = dataclasses.replace(lender, id="a", label="ablation", tuned_as="x",
                                 overrides=dict(optimizer="xrda", l1_weights="uniform"))
  experiment = dataclasses.replace(experiment, methods=(lender, ablation))
  assert sweeps.tune_trials(ablation) == []
  ready, waiting = sweeps.plan(experiment, [ablation])
  assert ready == [] and len(waiting) == 2 + 2 * 2  # its front (both values) and the seeds
  for trial, val in zip(sweeps.tune_trials(lender), (0.90, 0.91, 0.97, 0.92)):
    _finish(experiment, trial, val, 0.9, 10.0)
  ready, waiting = sweeps.plan(experiment, [ablation])
  assert not waiting
  assert sorted((t.knob_value, t.seed) for t in ready) == [
      (0.5, 0), (0.5, 1), (0.5, 2), (0.9, 0), (0.9, 1), (0.9, 2)]
  assert all(t.setting == (2.0, 9.5) and t.overrides(experiment)["l1_weights"] == "uniform"
             for t in ready)
  # The lender's own seeds run at the seeded value too, its reference point being a tune trial.
  lent = sweeps.plan(experiment, [lender])[0]
  assert sorted((t.stage, t.knob_value, t.seed) for t in lent) == [
      ("front", 0.5, 0), ("seed", 0.5, 1), ("seed", 0.5, 2), ("seed", 0.9, 1), ("seed", 0.9, 2)]
  # Seeded elsewhere than its reference: no seeds there.
  elsewhere = dataclasses.replace(lender, seeded_at=(0.5,))
  assert sorted((t.stage, t.knob_value, t.seed) for t in sweeps.plan(experiment, [elsewhere])[0]
                ) == [("front", 0.5, 0), ("seed", 0.5, 1), ("seed", 0.5, 2)]
  with pytest.raises(ValueError, match="tuned as 'nobody'"):
    sweeps.tuned_setting(experiment, dataclasses.replace(ablation, tuned_as="nobody"))


def test_report_compares_seeded_methods_target_by_target_against_their_spread(experiment):
  import dataclasses
  xrda = _two_knob_method(refine=False, seeds=(1, 2, 3), seeded_at=(0.5, 0.9))
  base = sweeps.Method("b", "baseline", dict(optimizer="sgd"), "pruning_sparsity", 0.9,
                       (0.5, 0.9), ("learning_rate", (0.1,)), refine=False, seeds=(1, 2, 3),
                       seeded_at=(0.5, 0.9))
  experiment = dataclasses.replace(experiment, methods=(xrda, base))
  for trial in sweeps.tune_trials(xrda) + sweeps.tune_trials(base):
    _finish(experiment, trial, 0.9, 0.99, 10.0)
  # test errors in %: xrda 1, 2, 3 at 0.5 and 1, 1.1, 1.2 at 0.9; the baseline 5, 6, 7 and
  # 1.1, 1.2, 1.3 (seed 0 at 0.5: 4%).
  errors = {("x", 0.5): (1, 2, 3), ("x", 0.9): (1.0, 1.1, 1.2), ("b", 0.5): (5, 6, 7),
            ("b", 0.9): (1.1, 1.2, 1.3)}
  for trial in sweeps.plan(experiment, [xrda, base])[0]:
    test = 4.0 if trial.seed == 0 else errors[trial.method.id, trial.knob_value][trial.seed - 1]
    _finish(experiment, trial, 0.9, 1 - test / 100, 2.0 if trial.knob_value == 0.5 else 10.0)
  summary = report.summarize(experiment)
  assert summary["missing"] == []
  points = {p["knob_value"]: p for p in summary["methods"]["b"]["points"]}
  assert points[0.5]["seeds"] == [1, 2, 3] and points[0.5]["seed0_test_error"] == pytest.approx(4)
  assert points[0.5]["test_error_mean"] == pytest.approx(6)
  assert points[0.5]["test_error_std"] == pytest.approx(1)
  assert comparison.verdict(summary["methods"]["x"]["points"][0], points[0.5])[2] == "leads"
  text = report.markdown(summary)
  assert "- 0.5: two knobs against baseline: 2.00 ± 1.00% against 6.00 ± 1.00% " \
         "(difference -4.00, spread 2.00): leads" in text
  assert "- 0.9: two knobs against baseline: 1.10 ± 0.10% against 1.20 ± 0.10% " \
         "(difference -0.10, spread 0.20): within the spread" in text
  assert "| 0.5 | baseline | 1, 2, 3 | 6.00 ± 1.00 | 4.00 |" in text
  with_b_trailing = dict(points[0.5], test_error_mean=0.5, test_error_std=0.1)
  assert comparison.verdict(points[0.9], with_b_trailing)[2] == "trails"


def test_a_grid_over_several_knobs_says_which_knob_its_choice_is_on_the_edge_of():
  tuned = {"key": ("learning_rate", "momentum_timescale"), "chosen": (1.0, 19.0),
           "values": [(1.0, 9.5), (1.0, 19.0), (1.0, 38.0), (2.0, 9.5), (2.0, 19.0)]}
  assert report._edge(tuned) == "; learning_rate on the edge"  # pylint: disable=protected-access
  assert report._edge(dict(tuned, chosen=(2.0, 38.0))) == (  # pylint: disable=protected-access
      "; learning_rate on the edge; momentum_timescale on the edge")
  assert report._edge(dict(tuned, values=[(1.0, 9.5), (1.0, 19.0)], chosen=(1.0, 19.0))) == (  # pylint: disable=protected-access
      "; momentum_timescale on the edge")


def test_a_language_model_s_perplexity_and_dead_groups_are_tabled_per_point(experiment):
  import dataclasses
  m = dataclasses.replace(experiment.methods[0], seeds=(1, 2), seeded_at=(0.9,))
  experiment = dataclasses.replace(experiment, methods=(m,))
  assert "dead" not in report.markdown(report.summarize(experiment))
  groups = lambda heads, neurons: {  # noqa: E731  (two blocks' sets, as the loop logs them)
      "blocks/0/heads": {"groups": 4, "zero": heads}, "blocks/1/heads": {"groups": 4, "zero": 0},
      "blocks/0/neurons": {"groups": 512, "zero": neurons},
      "blocks/1/neurons": {"groups": 512, "zero": 7}}
  for trial, val in zip(sweeps.tune_trials(m), (0.5, 0.6)):
    _finish(experiment, trial, val, 0.5, 10.0, val_perplexity=4.0, test_perplexity=4.1,
            dead_groups=groups(1, 3))
  seeds = [t for t in sweeps.plan(experiment, [m])[0] if t.stage == "seed" and t.knob_value == 0.9]
  for trial, ppl in zip(seeds, (3.0, 5.0)):
    _finish(experiment, trial, 0.6, 0.5, 10.0, val_perplexity=ppl, test_perplexity=ppl,
            dead_groups=groups(0, 0))
  summary = report.summarize(experiment)
  point = summary["methods"]["m"]["points"][0]
  assert point["val_perplexity_mean"] == pytest.approx(4.0)  # seeds 1, 2: 3 and 5
  assert point["val_perplexity_std"] == pytest.approx(2 ** 0.5)
  text = report.markdown(summary)
  assert "## Perplexity and dead groups" in text
  # Its reference and front tables are on perplexity too, not the next-byte error.
  assert "| seeds | test perplexity |" in text and "(weights) | test perplexity |" in text
  assert "test error %" not in text
  table = text.split("## Perplexity and dead groups")[1]
  row = next(line for line in table.splitlines() if line.startswith("| method M | 0.9 |"))
  # seed 0 (the tune trial at 0.9, lr 0.2): 4.0; the seeds 4 ± 1.414; heads 1 of 8, neurons 10
  assert row == ("| method M | 0.9 | 10 | 4.000 | 4.000 ± 1.414 (1, 2) | 4.100 | 1 / 8 "
                 "| 10 / 1024 |")


def test_a_language_model_is_compared_by_perplexity_and_kept_out_of_the_error_headline():
  def point(ppl, err):  # two seeds each; byte error says the opposite of perplexity
    return {"knob_value": 0.9, "seeds": [1, 2], "seed0_test_error": None,
            "test_perplexity_mean": ppl, "test_perplexity_std": 0.01,
            "test_error_mean": err, "test_error_std": 0.01, "val_error_mean": err,
            "val_error_std": 0.01, "compression_mean": 10.0, "compression_weights_mean": 10.0}
  methods = {"xrda_target": {"label": "X", "knob": "l1_sparsity", "points": [point(3.0, 60.0)]},
             "gmp_erk": {"label": "G", "knob": "pruning_sparsity", "points": [point(3.5, 50.0)]}}
  summary = {"experiment": "lm", "label": "LM", "methods": methods}
  assert comparison.metric(methods) == "test_perplexity"
  table = report.equal_sparsity(summary)
  [line] = [x for x in table if x.startswith("- 0.9")]
  assert line == ("- 0.9: X against G: 3.00 ± 0.01 test perplexity against 3.50 ± 0.01 test "
                  "perplexity (difference -0.50, spread 0.02): leads")
  # The table too is on perplexity, not on the next-byte error.
  assert any("| test perplexity | (seed 0) | val perplexity |" in x for x in table)
  assert "| 0.9 | X | 1, 2 | 3.000 ± 0.010 | – | – | 10.0 | 10.0 |" in table
  assert report.equal_headline([summary]) == ""
  for p in (methods["xrda_target"]["points"][0], methods["gmp_erk"]["points"][0]):
    p["test_perplexity_mean"] = None  # an image model: by test error, into the headline
  assert comparison.metric(methods) == "test_error" and "trails" in report.equal_headline([summary])


def test_a_tuning_under_way_names_no_setting():
  tuned = {"key": "learning_rate", "chosen": None, "values": [0.05, 0.1]}
  assert report._tuned(tuned) == (  # pylint: disable=protected-access
      "learning_rate = – (of [0.05, 0.1], not chosen yet)")
  assert report._tuned(dict(tuned, chosen=0.1)) == (  # pylint: disable=protected-access
      "learning_rate = 0.1 (of [0.05, 0.1]; on the edge)")


def test_seeded_targets_meet_the_published_points_of_their_compression_on_weights():
  def point(compression, mean, std):
    return dict(knob_value=1 - 1 / compression, seeds=[1, 2, 3], test_error_mean=mean,
                test_error_std=std, compression_weights_mean=compression)

  methods = {"x": {"points": [point(10.0, 1.3, 0.1), point(50.0, 1.5, 0.1)]},
             "g": {"points": [point(50.0, 1.7, 0.02)]},
             "w": {"points": [point(50.0, 1.6, 0.1)]},
             "one_seed": {"points": [point(50.0, 1.0, None)]}}
  published = [{"method": "dense", "error": 1.4, "compression": 1.0, "source": "s"},
               {"method": "Han", "error": 1.59, "compression": 12.0, "source": "s"},  # 10×: no
               {"method": "LOBSTER", "error": 1.65, "compression": 50.04, "source": "s"}]
  found = comparison.against_published(methods, published)
  assert [(pub["method"], key, word[2]) for pub, key, _, word in found] == [
      ("LOBSTER", "x", "leads"), ("LOBSTER", "g", "trails"), ("LOBSTER", "w", "within the spread")]
  gap, spread, _ = found[0][3]
  assert math.isclose(gap, 1.5 - 1.65) and spread == 0.1  # the published point has no spread
  summary = {"methods": {k: dict(v, label=k.upper()) for k, v in methods.items()},
             "published": published}
  table = report._seeded_at_published(summary)  # pylint: disable=protected-access
  assert "| LOBSTER 50.04× @1.65% | s | X | 1, 2, 3 | 1.50 ± 0.10 | -0.15 | leads |" in table
  assert report._seeded_at_published(dict(summary, published=published[:2])) == []  # pylint: disable=protected-access
  # Within 5% of the published compression (a paper's 114.92× is its 115×), not beyond.
  for compression, met in ((52.5, True), (52.6, False), (47.7, True), (47.6, False)):
    near = {"x": {"points": [point(compression, 1.5, 0.1)]}}
    assert bool(comparison.against_published(near, published)) == met, compression
