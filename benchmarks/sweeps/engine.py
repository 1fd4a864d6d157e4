"""Runs the protocol's trials on Optuna workers that share one storage.

Each experiment (and its tuning stage) is an Optuna study named by its id, maximising the final
validation accuracy. A free worker asks the policy (``policy.plan``) for the first trial that
can run and that no worker holds, enqueues it (``Study.enqueue_trial``, the trial's id and
definition as user attributes) and calls ``Study.optimize`` for one trial, whose objective
trains it in ``outcomes.workdir``: a directory named by the trial's parameters, so that a trial
taken up again (under a new Optuna number) resumes from its checkpoints. The objective publishes
the outcome as a user attribute, which every worker reads back (``outcomes.SHARED``) to plan the
next stage: fronts and seeds wait for their tuning on whichever machine it ran.

Workers on several machines share a storage URL (PostgreSQL, MySQL: any SQLAlchemy URL; SQLite
for one machine). Each running trial sends heartbeats; a trial whose worker died (killed,
machine lost) is failed once its heartbeat is older than the grace period, and the next free
worker enqueues it again and resumes it from the workdir's checkpoint (a shared filesystem, or a
``gs://`` workdir, when the workers are on several machines). A training started by a worker
gets SIGTERM if the worker dies (it checkpoints and exits), and a worker waits for a workdir's
training lock before training there.

A worker builds each trial's definition from the catalogue it imported. When the sweep's own
sources (this package) change under it, say a checkout of a newer commit, its trainings are
stopped as by a signal (they checkpoint) and ``python -m benchmarks.sweeps`` starts itself again
under the new definitions, once the sources have settled and plan; a trial whose definition
changed is then refused by its workdir's config check rather than finished under the old one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from benchmarks.sweeps import outcomes, policy
from benchmarks.sweeps.catalogue import Experiment, Method, Trial
from train import locks

Queue = list[tuple[Experiment, list[Method]]]

TRAINER = ["-m", "train.main"]  # run with sys.executable from the repository's root
FINISHED = "finished: every trial is done; `python -m benchmarks.report --all` writes the results"
STOP_GRACE_S = 600  # for a training's checkpoint; then (or at a second signal) it is killed
POLL_S = 5.0  # how often an idle worker looks for work that another worker's trial unlocked
HEARTBEAT_S = 60
GRACE_S = 300  # a running trial without a heartbeat this long is taken for dead
SOURCES = Path(__file__).parent  # the definitions a worker runs by
SOURCES_CHECK_S = 10.0  # between looks while trainings run; a worker looks before each trial

# Heartbeats and failing stale trials are marked experimental since Optuna 2.9; they are what
# lets another worker take a dead worker's trial up.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                        module=r"optuna|benchmarks\.sweeps")


class SourcesChanged(Exception):
  """The sweep's sources changed since the workers started; their trainings have stopped."""


def sources_fingerprint() -> str:
  """The sweep package's sources as a worker would import them now."""
  digest = hashlib.sha256()
  for path in sorted(SOURCES.glob("*.py")):
    try:
      text = path.read_bytes()
    except OSError:  # (removed between the listing and the read: a checkout under way)
      text = b"\0missing"
    digest.update(path.name.encode() + b"\0" + text + b"\0")
  return digest.hexdigest()


IMPORTED = sources_fingerprint()  # what this process's definitions were read from


def default_storage() -> str:
  return f"sqlite:///{outcomes.RUNS / 'optuna.db'}"


def storage(url: str, heartbeat_s: float = HEARTBEAT_S,
            grace_s: float = GRACE_S) -> optuna.storages.RDBStorage:
  """The sweep's storage, with heartbeats (a SQLite file's directory is created)."""
  kwargs: dict[str, Any] = {}
  if url.startswith("sqlite:///"):
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 60}}  # workers writing at once wait, not fail
  return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                    heartbeat_interval=max(1, round(heartbeat_s)),
                                    grace_period=max(1, round(grace_s)))


def pull(url: str) -> int:
  """Shares the outcomes published to the storage at ``url`` (``outcomes.SHARED``), for a report
  or an archive on a machine that did not train them; returns how many."""
  count = 0
  for name in optuna.study.get_all_study_names(storage=url):
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    count += _share(name, trials)[0]
  return count


def _share(study_name: str, trials: list[optuna.trial.FrozenTrial]) -> tuple[int, set[str]]:
  """Puts the outcomes the study's trials published into ``outcomes.SHARED``; returns how many,
  and the keys of the trials a worker holds (waiting or running, no outcome yet)."""
  count, held = 0, set()
  for t in trials:
    trial_id = t.user_attrs.get("trial")
    if trial_id is None:  # (a trial nobody enqueued)
      continue
    if "outcome" in t.user_attrs:
      outcomes.SHARED[f"{study_name}/{trial_id}"] = t.user_attrs["outcome"]
      count += 1
    elif t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING):
      held.add(f"{study_name}/{trial_id}")
  return count, held



def _params(trial: Trial) -> dict[str, int | float]:
  """The trial's numeric parameters, shown by the dashboard (each a one-point distribution)."""
  out: dict[str, int | float] = {"seed": trial.seed}
  values = dict(trial.settings)
  if trial.method.knob:
    values[trial.method.knob] = trial.knob_value
  for name, value in values.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      out[name] = value
  return out


# ------------------------------------------------------------------------------ trainings


def _commit() -> str:
  return subprocess.run(["git", "rev-parse", "HEAD"], cwd=outcomes.REPO, capture_output=True,
                        text=True, check=False).stdout.strip()


def train_command(experiment: Experiment, trial: Trial) -> list[str]:
  """The trial's training command, run from the repository's root."""
  directory = outcomes.workdir(experiment, trial)
  if directory.is_relative_to(outcomes.REPO):
    directory = directory.relative_to(outcomes.REPO)
  flags = [f"--config.{k}={v}" for k, v in trial.overrides(experiment).items()]
  return ["python", *TRAINER, f"--config={experiment.config}", f"--workdir={directory}", *flags]


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
  """(In the child, before exec.) SIGTERM when the worker thread that started it dies."""
  if _LIBC is not None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def launch(experiment: Experiment, trial: Trial,
           cores: set[int] | None = None) -> subprocess.Popen:
  """Starts the trial's training; ``cores``: the CPUs it may use (None: any)."""
  directory = outcomes.workdir(experiment, trial)
  directory.mkdir(parents=True, exist_ok=True)
  commit = directory / "commit.txt"
  if not commit.exists():
    commit.write_text(_commit() + "\n")
  command = [sys.executable, *train_command(experiment, trial)[1:]]
  log = open(directory / "log.txt", "a")  # pylint: disable=consider-using-with
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  # Its own session: a Ctrl-C in the terminal reaches the worker only, which then stops each
  # training with one SIGTERM (a second signal would cut a training's checkpoint short).
  proc = subprocess.Popen(command, cwd=outcomes.REPO, stdout=log, stderr=subprocess.STDOUT,
                          env=env, preexec_fn=_die_with_parent, start_new_session=True)
  log.close()
  if cores is not None:  # before JAX starts its threads, which inherit it
    os.sched_setaffinity(proc.pid, cores)
  return proc


def training_elsewhere(directory: Path) -> bool:
  """Whether a training holds the workdir's lock (train.train refuses a second one)."""
  return locks.held(locks.training_lock(directory))


def core_slots(workers: int) -> list[set[int] | None]:
  """Disjoint CPU sets, one per worker: unpinned, two trainings on two cores each run XLA and
  tf.data threads for both cores; pinned, two LeNet-300-100 trainings took 67.5 s instead of
  87.7 s (benchmarks/results/sweep_throughput.txt)."""
  cores = sorted(os.sched_getaffinity(0))
  if workers <= 1 or len(cores) < workers:
    return [None] * max(workers, 1)
  share = len(cores) // workers
  return [set(cores[i * share:(i + 1) * share]) for i in range(workers)]


class TrainingFailed(Exception):
  """A training exited with an error that is not a divergence (the trial is retried by a later
  run of the sweep, not by this one)."""


class Stopped(Exception):
  """The worker was asked to stop (a signal, or another worker's error)."""


def schedule(queue: Queue) -> tuple[list[tuple[Experiment, Trial]], list[tuple[Experiment, Trial]]]:
  """(the trials that can run, in the order the workers take them; those that wait for their
  tuning). Experiments in the queue's order (a tuning stage with its experiment); within one, the
  methods tuned on their own before those that borrow a setting (ablations), then seed by
  seed, and within a seed the longest first (stable). So a sweep cut short leaves the compared
  methods with as many seeds each, not one method with all of its seeds and the other with
  none; and a seed-0 run at the full budget that one method's tuning unlocked starts before
  the other methods' short tune trials, so that the experiment does not end on long runs."""
  ready, waiting = [], []
  for experiment, methods in queue:
    now, later = policy.plan(experiment, methods)
    ready += [(experiment, t) for t in now]
    waiting += [(experiment, t) for t in later]
  order: dict[str, int] = {}
  for experiment, _ in queue:
    order.setdefault(experiment.id, len(order))
    if experiment.tuning is not None:
      order[experiment.tuning.id] = order[experiment.id]
  ready.sort(key=lambda pair: (order[pair[0].id], pair[1].method.tuned_as is not None,
                               pair[1].seed, -pair[0].overrides["num_epochs"]))
  return ready, waiting


# -------------------------------------------------------------------------------- workers


class Sweep:
  """The queue's trials on ``workers`` local workers, with whatever other workers share
  ``storage``."""

  def __init__(self, queue: Queue, storage: optuna.storages.BaseStorage, workers: int = 1):
    self.queue = queue
    self.storage = storage
    self.workers = workers
    self.studies = {experiment.id: optuna.create_study(
        storage=storage, study_name=experiment.id, direction="maximize", load_if_exists=True)
        for experiment, _ in queue}
    self.experiments = {experiment.id: experiment for experiment, _ in queue}
    self.failed: set[str] = set()  # keys whose training failed under this process
    self.running: dict[str, subprocess.Popen] = {}
    self.signals: list[int] = []
    self.error: BaseException | None = None
    self.lock = threading.RLock()
    self.sources = IMPORTED
    self.sources_changed = False
    self._sources_checked = time.monotonic()
    self._sources_lock = threading.Lock()  # (not self.lock: a pick holds that one for long)

  @property
  def stopping(self) -> bool:
    return bool(self.signals) or self.error is not None or self.sources_changed

  def check_sources(self, now: bool = False) -> None:
    """Stops the workers if the sources changed; at most every ``SOURCES_CHECK_S`` unless
    ``now`` (before a trial is picked or launched)."""
    if self.sources_changed or (
        not now and time.monotonic() - self._sources_checked < SOURCES_CHECK_S):
      return
    with self._sources_lock:
      self._sources_checked = time.monotonic()
      if not self.sources_changed and sources_fingerprint() != self.sources:
        _log(f"{SOURCES} changed since the workers started: stopping their trainings "
             "(they checkpoint) to resume under the new definitions")
        self.sources_changed = True

  # -- what to run

  def refresh(self) -> set[str]:
    """Reads every study: shares the outcomes published so far (``outcomes.SHARED``) and
    returns the keys that a worker holds (waiting or running)."""
    held = set()
    for name, study in self.studies.items():
      held |= _share(name, study.get_trials(deepcopy=False))[1]
    return held

  def plan(self) -> tuple[list[tuple[Experiment, Trial]], int]:
    """(the trials that can run, in the order to run them; how many wait for their tuning):
    ``schedule(self.queue)``."""
    ready, waiting = schedule(self.queue)
    return ready, len(waiting)

  def pick(self) -> tuple[Experiment, Trial] | str:
    """Enqueues the first trial that can run and that no worker holds, and returns it; else
    why there is none: "busy" (other workers' trials may unlock more), "finished" or
    "blocked" (only failed trials, or trials waiting on them, are left)."""
    with self.lock:
      for study in self.studies.values():  # a dead worker's trial is failed, then taken up
        optuna.storages.fail_stale_trials(study)
      held = self.refresh()
      ready, waiting = self.plan()
      free = [(e, t) for e, t in ready if outcomes.key(e, t) not in held | self.failed]
      for experiment, trial in free:
        if training_elsewhere(outcomes.workdir(experiment, trial)):
          continue  # a training left by a worker killed hard: it stops soon
        self.studies[experiment.id].enqueue_trial(
            {}, user_attrs={"trial": trial.id, "stage": trial.stage, "method": trial.method.id})
        return experiment, trial
      if held or free or self.running:
        return "busy"
      return "blocked" if self.failed or waiting else "finished"

  # -- one trial

  def objective(self, optuna_trial: optuna.Trial, cores: set[int] | None) -> float:
    name = optuna_trial.study.study_name
    experiment = self.experiments[name]
    trial_id = optuna_trial.user_attrs.get("trial")
    trial = self._resolve(experiment, trial_id)
    if trial is None:
      raise optuna.TrialPruned(f"{name}/{trial_id} is not a trial of this sweep's plan")
    for param, value in _params(trial).items():
      suggest = optuna_trial.suggest_int if isinstance(value, int) else optuna_trial.suggest_float
      with contextlib.suppress(ValueError):  # (a name an earlier trial gave another kind)
        suggest(param, value, value)
    k = outcomes.key(experiment, trial)
    with self.lock:
      earlier = [t.number for t in optuna_trial.study.get_trials(
          deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                 if t.user_attrs.get("trial") == trial_id and t.number < optuna_trial.number]
      if earlier or outcomes.finished(experiment, trial) or k in self.running:
        optuna_trial.set_user_attr("duplicate_of", earlier[0] if earlier else None)
        raise optuna.TrialPruned(f"{k} is held by another worker or done")
      self.running[k] = None  # (placeholder until launched)
    try:
      returncode = self._train(experiment, trial, cores)
    finally:
      with self.lock:
        self.running.pop(k, None)
    directory = outcomes.workdir(experiment, trial)
    if self.stopping and returncode != 0:
      _log(f"{k}: stopped (exit {returncode})")
      raise Stopped(k)
    if returncode != 0 and not outcomes.diverged(directory):
      with self.lock:
        self.failed.add(k)
      _log(f"{k}: FAILED (exit {returncode})")
      raise TrainingFailed(f"{k}: exit {returncode}, see {directory / 'log.txt'}")
    result = outcomes.entry(experiment, trial)
    if result is None:
      with self.lock:
        self.failed.add(k)
      raise TrainingFailed(f"{k}: exited without finishing its epochs")
    optuna_trial.set_user_attr("outcome", result)
    with self.lock:
      outcomes.SHARED[k] = result
    if "diverged" in result:
      _log(f"{k}: diverged")
      return math.nan  # a failed Optuna trial, whose outcome the policy reads as divergence
    _log(f"{k}: done")
    return result["records"][-1]["val_accuracy"]

  def _resolve(self, experiment: Experiment, trial_id: str | None) -> Trial | None:
    """The trial an enqueued id names, among those the plan has named so far (the ones it can
    run are among them)."""
    return next((t for t in policy.known_trials(experiment) if t.id == trial_id), None)

  def _train(self, experiment: Experiment, trial: Trial, cores: set[int] | None) -> int:
    """Trains the trial to its end (or until asked to stop); returns the exit status."""
    k = outcomes.key(experiment, trial)
    while training_elsewhere(outcomes.workdir(experiment, trial)):  # its SIGTERM checkpointing
      if self.stopping:
        raise Stopped(k)
      time.sleep(0.5)
    self.check_sources(now=True)  # (another worker may have seen a change since the pick)
    if self.stopping:
      raise Stopped(k)
    proc = launch(experiment, trial, cores)
    with self.lock:
      self.running[k] = proc
    _log(f"{k}: started")
    signalled, deadline, seen = False, math.inf, 0
    while proc.poll() is None:
      self.check_sources()
      if self.stopping and not signalled:
        proc.send_signal(signal.SIGTERM)  # it checkpoints and exits
        signalled, deadline, seen = True, time.monotonic() + STOP_GRACE_S, len(self.signals)
      elif signalled and (len(self.signals) > max(seen, 1) or time.monotonic() > deadline):
        proc.kill()
        proc.wait()
        break
      time.sleep(0.2)
    return proc.returncode

  # -- the workers

  def work(self, cores: set[int] | None) -> str:
    """One worker: trains what the plan offers until nothing is left; returns why it ended."""
    while True:
      self.check_sources(now=True)
      if self.stopping:
        return "stopped"
      picked = self.pick()
      if picked in ("finished", "blocked"):
        return picked
      if picked == "busy":
        self._sleep(POLL_S)
        continue
      experiment, _ = picked
      self.studies[experiment.id].optimize(
          functools.partial(self.objective, cores=cores), n_trials=1,
          catch=(TrainingFailed,), gc_after_trial=False)
    return "stopped"

  def _sleep(self, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not self.stopping:
      time.sleep(min(0.2, seconds))

  def run(self) -> None:
    """Runs the workers until every trial is done, a signal stops them (each training gets one
    SIGTERM and checkpoints; a second signal kills it), or one fails (then the others stop)."""
    endings: list[str] = []

    def worker(cores):
      try:
        endings.append(self.work(cores))
      except Stopped:
        endings.append("stopped")
      except BaseException as e:  # pylint: disable=broad-exception-caught
        self.error = self.error or e

    with _signals(self.signals):
      threads = [threading.Thread(target=worker, args=(cores,), daemon=True)
                 for cores in core_slots(self.workers)]
      for thread in threads:
        thread.start()
      for thread in threads:
        while thread.is_alive():
          thread.join(0.2)
      with self.lock:
        self.refresh()
        for experiment, _ in self.queue:
          policy.archive(experiment)
    if self.error is not None:
      raise self.error
    if self.signals:
      print("stopped: rerun the same command to resume", flush=True)
      raise SystemExit(128 + self.signals[0])
    if self.sources_changed:
      raise SourcesChanged(f"{SOURCES} changed since the workers started")
    if "blocked" in endings:
      print(f"stopped: {len(self.failed)} failed, the trials that wait on them left", flush=True)
    else:
      print(FINISHED, flush=True)


def _log(message: str) -> None:
  print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@contextlib.contextmanager
def _signals(requested: list[int]):
  """Collects the signals (SIGINT, SIGTERM, SIGHUP) received while the workers run."""
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
  for s in previous:
    signal.signal(s, lambda signum, frame: requested.append(signum))
  try:
    yield requested
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
