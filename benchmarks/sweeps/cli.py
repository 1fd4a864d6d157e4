"""``python -m benchmarks.sweeps``: the plan, or workers that run it (see the package's doc)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import optuna

from benchmarks.sweeps import engine
from benchmarks.sweeps.catalogue import EXPERIMENTS, Experiment, Method


def queue_of(names: list[str], methods: list[str], epochs: int | None
             ) -> list[tuple[Experiment, list[Method]]]:
  """The experiments in order, each after its tuning stage, with the methods asked for."""
  queue = []
  for name in names:
    experiment = EXPERIMENTS[name]() if epochs is None else EXPERIMENTS[name](epochs)
    for stage in [experiment.tuning] * (experiment.tuning is not None) + [experiment]:
      known = {m.id: m for m in stage.methods}
      queue.append((stage, [known[s] for s in methods if s in known] if methods
                    else list(stage.methods)))
  return queue


def print_plan(queue: list[tuple[Experiment, list[Method]]]) -> None:
  """The trials that can run, in the order the workers take them, then those that wait."""
  ready, waiting = engine.schedule(queue)
  for state, pairs in (("ready  ", ready), ("waiting", waiting)):
    for experiment, t in pairs:
      print(state, experiment.id, t.id)
  if not ready and not waiting:
    print(engine.FINISHED)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.sweeps",
                                   description="The papers' budgets, run by Optuna workers.")
  parser.add_argument("--experiment", required=True,
                      help=f"comma-separated, run in this order; of {', '.join(EXPERIMENTS)}")
  parser.add_argument("--methods", default="", help="comma-separated method ids (default: all)")
  parser.add_argument("--workers", type=int, default=2,
                      help="trainings at a time on this machine, each on its own cores")
  parser.add_argument("--storage", default=None,
                      help="an SQLAlchemy URL that every machine's workers share, e.g. "
                      "postgresql://user@host/sweeps (default: a SQLite file under runs/sweeps)")
  parser.add_argument("--heartbeat-s", type=float, default=engine.HEARTBEAT_S,
                      help="how often a running trial tells the storage it is alive")
  parser.add_argument("--grace-s", type=float, default=engine.GRACE_S,
                      help="a trial silent this long is failed and taken up by another worker")
  parser.add_argument("--plan", action="store_true", help="print the trials and exit")
  parser.add_argument("--epochs", type=int, default=None,
                      help="another budget than the paper's (its own directory; for trying)")
  args = parser.parse_args(argv)
  names = [s for s in args.experiment.split(",") if s]
  unknown = [s for s in names if s not in EXPERIMENTS]
  if unknown or not names:
    parser.error(f"unknown experiment(s) {unknown}; valid: {', '.join(EXPERIMENTS)}")
  wanted = [s for s in args.methods.split(",") if s]
  every = {m.id for name in names for m in EXPERIMENTS[name]().methods}
  if set(wanted) - every:
    parser.error(f"unknown method(s) {sorted(set(wanted) - every)}; valid: {', '.join(every)}")
  if args.workers < 1:
    parser.error(f"--workers must be at least 1, got {args.workers}")
  queue = queue_of(names, wanted, args.epochs)
  if args.plan:
    print_plan(queue)
    return
  url = args.storage or engine.default_storage()
  optuna.logging.set_verbosity(optuna.logging.WARNING)  # the workers print one line a trial
  print(f"storage {url}; watch it with `optuna-dashboard {url}`", flush=True)
  try:
    engine.Sweep(queue, engine.storage(url, args.heartbeat_s, args.grace_s), args.workers).run()
  except engine.SourcesChanged as e:
    command = ([sys.executable, *sys.orig_argv[1:]] if argv is None
               else [sys.executable, "-m", "benchmarks.sweeps", *argv])
    print(f"{e}: restarting once they settle and plan", flush=True)
    restart(command)


SETTLE_S = 5.0


def restart(command: list[str]) -> None:
  """Runs ``command`` (this runner's own) in place of this process once the sources have stood
  still for ``SETTLE_S`` and plan (``--plan`` exits 0): a checkout half-way, or an edit that
  does not import, is waited out rather than run into."""
  while True:
    seen = engine.sources_fingerprint()
    time.sleep(SETTLE_S)
    if engine.sources_fingerprint() != seen:
      continue
    check = subprocess.run([*command, "--plan"], capture_output=True, text=True, check=False)
    if check.returncode == 0:
      os.execv(command[0], command)
    print(f"the changed sources do not plan (exit {check.returncode}: "
          f"{(check.stderr.strip().splitlines() or [''])[-1]}); waiting for a change",
          flush=True)
    while engine.sources_fingerprint() == seen:
      time.sleep(SETTLE_S)
