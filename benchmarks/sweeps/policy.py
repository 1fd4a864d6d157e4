"""The protocol's order: tune on validation, refine (once, or twice where the choice stays on
an edge), then the front and the seeds with the
chosen setting, falling back to the next best where the chosen one diverged at the full budget.
Pure functions of the outcomes (``outcomes``): which trials can run now, which wait."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.sweeps import outcomes
from benchmarks.sweeps.catalogue import (Experiment, Method, Trial, front_values, seeded_values,
                                         tuning_stage)


def known_trials(experiment: Experiment) -> list[Trial]:
  """Every trial the plan has named so far (fronts and seeds once their tuning is known)."""
  trials = []
  for method in experiment.methods:
    if experiment.tuning is None:  # (else they are the tuning stage's own)
      trials += all_tune_trials(experiment, method)
    best = tuned_setting(experiment, method)
    if best is not None:
      trials += tuned_trials(experiment, method, best)
  return trials


def tuned_trials(experiment: Experiment, method: Method, best: Any) -> list[Trial]:
  """What trains once the method is tuned: its front (seed 0), then its seeds at the reference
  and at ``seeded_at``."""
  return ([Trial(method, "front", v, best, 0) for v in front_values(experiment, method)]
          + [Trial(method, "seed", v, best, s) for v in seeded_values(method)
             for s in method.seeds])


def _lender(experiment: Experiment, method: Method) -> Method | None:
  """The method whose tuned setting ``method`` borrows (None: it is tuned itself)."""
  if method.tuned_as is None:
    return None
  lender = next((m for m in experiment.methods if m.id == method.tuned_as), None)
  if lender is None or lender.tuned_as is not None:
    raise ValueError(f"{experiment.id}: {method.id} is tuned as {method.tuned_as!r}, which is "
                     "not a method of the experiment tuned on its own.")
  return lender


def tune_trials(method: Method) -> list[Trial]:
  """The method's tuning grid (at its reference knob value, seed 0); none for a method that
  borrows its setting."""
  if method.tuned_as is not None:
    return []
  return [Trial(method, "tune", method.reference, v, 0) for v in method.tune[1]]


def validation_score(record: dict[str, Any]) -> float:
  """Higher is better: the validation accuracy, or a language model's validation perplexity
  negated (its accuracy is next-byte accuracy; perplexity is what it is judged by)."""
  if "val_perplexity" in record:
    return -record["val_perplexity"]
  return record["val_accuracy"]


def _scores(experiment: Experiment, trials: list[Trial]) -> dict[Any, float] | None:
  """{setting: final validation score (-inf: diverged)}; None until every trial finished."""
  records = [outcomes.final_record(experiment, t) for t in trials]
  if any(r is None for r in records):
    return None
  return {t.setting: -math.inf if "diverged" in r else validation_score(r)
          for t, r in zip(trials, records)}


def refine_trials(experiment: Experiment, method: Method) -> list[Trial]:
  """The tuning trials after the grid, for every method alike: one a step beyond the grid's edge
  when the grid's best is on it, else halfway (geometrically) between the best and its better
  neighbour; with ``experiment.edge_trial``, one more a step beyond the edge of the values tried
  where the best of the trials so far still lies on one, up to ``edge_trial`` of them. Each is
  named once the trials before it have finished; none when every grid value diverged or the
  method does not refine."""
  experiment, method = tuning_stage(experiment, method)  # (with_tuning hands it the flag)
  rounds = 1 + int(experiment.edge_trial)
  if not method.refine:
    return []
  several = isinstance(method.tune[0], tuple)
  trials: list[Trial] = []
  for edge_only in [False] + [True] * (rounds - 1):
    scores = _scores(experiment, tune_trials(method) + trials)
    if scores is None or len(scores) < 2 or max(scores.values()) == -math.inf:
      break
    value = _refine_grid(scores if several else {(k,): v for k, v in scores.items()},
                         edge_only)
    if value is None:
      break
    trials.append(Trial(method, "tune", method.reference, value if several else value[0], 0))
  return trials


def _step(values: list[Any], best: Any, scores: dict[Any, float]) -> Any | None:
  """One knob's refining value: a step beyond the grid's edge when the best is on it, else
  halfway (geometrically) between the best and its better neighbour; None where the values are
  not positive numbers (geometric steps need them) or every rounding lands on a value tried."""
  if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
    return None
  i = values.index(best)
  if i in (0, len(values) - 1):
    value = best * best / values[1 if i == 0 else -2]
  else:
    value = math.sqrt(best * max(values[i - 1], values[i + 1], key=scores.__getitem__))
  if all(isinstance(v, int) for v in values):
    rounded = [round(value)]
  else:  # short, unless that lands on a value already tried
    rounded = [float(f"{value:.{digits}g}") for digits in (3, 6, 12)]
  return next((v for v in rounded if v not in values), None)


def _refine_grid(scores: dict[tuple, float], edge_only: bool = False) -> tuple | None:
  """The refining trial of a grid over several knobs: along the knob line through the best
  whose neighbour differs from it most (the knob that mattered most there), a step beyond the
  grid's edge where the best is on it (edges first, as for one knob), else halfway to the
  better neighbour; the other knobs as the best has them. ``edge_only``: a step beyond an
  edge, or None where the best is on none."""
  best = max(scores, key=scores.__getitem__)  # (dict order: ties go to the earlier trial)
  options = []
  for axis in range(len(best)):
    line = {k[axis]: v for k, v in scores.items()
            if all(k[j] == best[j] for j in range(len(best)) if j != axis)}
    values = sorted(line)
    value = None if len(values) < 2 else _step(values, best[axis], line)
    if value is None:
      continue
    on_edge = values.index(best[axis]) in (0, len(values) - 1)
    if edge_only and not on_edge:
      continue
    finite = [v for v in line.values() if v != -math.inf]
    spread = (line[best[axis]] - min(finite)) if len(finite) > 1 else math.inf
    options.append((on_edge, spread, -axis, best[:axis] + (value,) + best[axis + 1:]))
  return max(options)[-1] if options else None


def all_tune_trials(experiment: Experiment, method: Method) -> list[Trial]:
  """The grid, and its refinements once the trials before have told where they go (the trials
  of the method's tuning stage)."""
  return tune_trials(tuning_stage(experiment, method)[1]) + refine_trials(experiment, method)


def tuned_setting(experiment: Experiment, method: Method) -> Any | None:
  """The tune trial with the best final validation accuracy (None until all, the refinements
  included, have finished, or if every one diverged); a tie goes to the earlier trial, the
  grid's before its refinement (LeNet-5's xrda: lr 0.5 and 0.25 both 65 errors in 6,000).
  Tuned at a shorter budget, a setting whose full-budget reference run diverged gives way to the
  next best on validation (Fashion-MNIST's RigL: lr 0.2 trained 10 epochs, diverged in 40)."""
  lender = _lender(experiment, method)
  if lender is not None:
    return tuned_setting(experiment, lender)
  scores = _scores(tuning_stage(experiment, method)[0],
                   all_tune_trials(experiment, method))  # (None: grid unfinished)
  if scores is None:
    return None
  for setting in sorted(scores, key=lambda s: -scores[s]):  # stable: ties keep their order
    if scores[setting] == -math.inf:
      return None
    if not diverged_at_full_budget(experiment, method, setting):
      return setting
  return None


def diverged_at_full_budget(experiment: Experiment, method: Method, setting: Any) -> bool:
  """Whether the method, tuned at a shorter budget, diverged at ``setting`` when its reference
  trained the full budget (a tuning stage at the full budget cannot diverge after choosing)."""
  if experiment.tuning is None:
    return False
  record = outcomes.final_record(experiment, Trial(method, "front", method.reference, setting, 0))
  return record is not None and "diverged" in record


def plan(experiment: Experiment, methods: list[Method]) -> tuple[list[Trial], list[Trial]]:
  """(trials that can run now, trials that wait for their method's tuning). A tuning stage apart
  (``experiment.tuning``) is planned on its own: the runner queues it first."""
  ready, waiting = [], []
  for method in methods:  # (the runner's order: engine.schedule)
    if experiment.tuning is None:
      ready += all_tune_trials(experiment, method)
    best = tuned_setting(experiment, method)
    later = tuned_trials(experiment, method, best)
    if best is None:  # tuning unfinished, or every setting diverged: nothing more to run
      tuner = _lender(experiment, method) or method
      tuned = _scores(tuning_stage(experiment, tuner)[0], all_tune_trials(experiment, tuner))
      waiting += [] if tuned is not None else later
    else:
      ready += later
  return [t for t in ready if not outcomes.finished(experiment, t)], waiting



def archive(experiment: Experiment) -> int:
  """Archives the outcome of every trial the plan has named (see ``outcomes.archive``), the
  tuning stage's too; returns how many entries changed."""
  earlier = 0 if experiment.tuning is None else archive(experiment.tuning)
  return earlier + outcomes.archive(experiment, known_trials(experiment))
