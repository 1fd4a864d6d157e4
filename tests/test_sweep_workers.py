"""Sweep workers in separate processes on one SQLite storage (as on several machines): they take
disjoint trials, and a trial whose worker is killed is taken up by the other and resumed from its
checkpoint, ending as an uninterrupted run does. Trainings are tests/sweep_trainer.py's (mock
data, 0.3 s a step at least); the workers are tests/sweep_worker.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests import sweep_worker

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600


def _start(tmp_path, name):
  out = open(tmp_path / f"{name}.txt", "w")  # pylint: disable=consider-using-with
  return subprocess.Popen(
      [sys.executable, str(REPO / "tests" / "sweep_worker.py"), str(tmp_path / "runs"),
       str(tmp_path / "archive"), f"sqlite:///{tmp_path / 'sweep.db'}"],
      cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)))


def _started(tmp_path, name):
  text = (tmp_path / f"{name}.txt").read_text()
  return [line.split()[1].rstrip(":") for line in text.splitlines() if line.endswith(": started")]


def _records(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def _wait_for(condition, what):
  deadline = time.monotonic() + TIMEOUT_S
  while not condition():
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.2)


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory):
  """Workers A and B on one storage; A is killed (SIGKILL) once its first trial has trained a
  few steps, B carries on to the end. Returns (tmp_path, A's trial key, B's exit status)."""
  tmp_path = tmp_path_factory.mktemp("sweep")
  a = _start(tmp_path, "a")
  _wait_for(lambda: _started(tmp_path, "a"), "worker A's first training")
  b = _start(tmp_path, "b")
  key = _started(tmp_path, "a")[0]
  workdir = tmp_path / "runs" / key
  _wait_for(lambda: (workdir / "checkpoints").exists() and any(
      p.name.isdigit() and int(p.name) >= 2 for p in (workdir / "checkpoints").iterdir()),
            "A's trial to checkpoint step 2")
  a.send_signal(signal.SIGKILL)  # no chance to stop its training: the training's own
  a.wait()                       # parent-death signal makes it checkpoint and exit
  try:
    status = b.wait(timeout=TIMEOUT_S)
  finally:
    b.kill()
  return tmp_path, key, status


def test_two_workers_take_disjoint_trials_and_one_takes_up_the_others_killed_trial(
    killed_sweep, monkeypatch):
  from benchmarks import sweeps
  tmp_path, killed, status = killed_sweep
  monkeypatch.setattr(sweeps.outcomes, "RUNS", tmp_path / "runs")
  monkeypatch.setattr(sweeps.outcomes, "ARCHIVE", tmp_path / "archive")
  output = (tmp_path / "b.txt").read_text()
  assert status == 0, output[-3000:]
  assert "finished: every trial is done" in output
  a, b = _started(tmp_path, "a"), _started(tmp_path, "b")
  assert a == [killed] and killed in b  # B took A's trial up...
  assert len(b) == len(set(b))  # ...and trained every other trial once
  toy = sweep_worker.experiment()
  every = [f"workers/{t.id}" for t in sweeps.known_trials(toy)]
  assert len(every) == 3  # two tune trials, then seed 1 at the chosen rate
  assert sorted(a + [k for k in b if k != killed]) == sorted(every)

  study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path / 'sweep.db'}")
  states = {}
  for t in study.trials:
    states.setdefault(f"workers/{t.user_attrs['trial']}", []).append(t.state.name)
  assert states.pop(killed) == ["FAIL", "COMPLETE"]  # failed for its silence, then redone
  assert all(s == ["COMPLETE"] for s in states.values()) and len(states) == len(every) - 1
  archive = json.loads((tmp_path / "archive" / "workers.trials.json").read_text())
  assert sorted(f"workers/{k}" for k in archive) == sorted(every)  # all, trained by either


def test_the_taken_up_trial_resumed_and_ends_as_an_uninterrupted_run(killed_sweep, tmp_path):
  from benchmarks import sweeps
  runs, killed, _ = killed_sweep
  resumed = _records(runs / "runs" / killed)
  assert [r["epoch"] for r in resumed] == list(range(1, sweep_worker.EPOCHS + 1))
  assert any("epoch_resumed_at_step" in r for r in resumed)  # not started again from scratch
  toy = sweep_worker.experiment()
  trial = next(t for t in sweeps.tune_trials(toy.methods[0]) if f"workers/{t.id}" == killed)
  command = sweeps.engine.train_command(toy, trial)
  command = [sys.executable, str(REPO / "tests" / "sweep_trainer.py")] + [
      a if not a.startswith("--workdir=") else f"--workdir={tmp_path / 'uninterrupted'}"
      for a in command[3:]]
  subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=TIMEOUT_S,
                 env=dict(os.environ, PYTHONPATH=str(REPO)))
  uninterrupted = _records(tmp_path / "uninterrupted")
  for one, other in zip(resumed, uninterrupted, strict=True):
    for k in ("train_loss", "val_accuracy", "test_accuracy", "test_loss", "density"):
      assert one[k] == pytest.approx(other[k], rel=1e-6, abs=1e-7), k
