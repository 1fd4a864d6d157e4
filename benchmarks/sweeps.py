"""The papers' budgets: each method tuned with the same trials on validation, its sparsity knob
swept to a front, and seeds at its reference point (issue: results that hold up).

    python -m benchmarks.sweeps --experiment lenet300100_mnist [--workers 2] [--methods xrda,sgd]
    python -m benchmarks.sweeps --experiment lenet300100_mnist --plan   # what would run

Stages per method, in order, each trial its own workdir under runs/sweeps/<experiment>/:
  1. tune:  the method's `tune` grid at its `reference` knob value, seed 0, and one refining
            trial; where training is dear (LeNet-5, CIFAR-10) at a shorter budget, the same for
            every method, in runs/sweeps/<experiment>_tuning/ (a successive-halving stage);
  2. front: every `front` knob value with the tuned setting, seed 0 (the reference too when it
            was tuned at the shorter budget);
  3. seeds: the reference point with the tuned setting, seeds 1 and 2.
The tuned setting is the tune trial with the highest final validation accuracy; the test set is
never read to choose. Rerunning resumes: finished trials are skipped and cut ones resume from
their checkpoints (each workdir records the commit that started it). `benchmarks/report.py`
turns the finished trials into tables and plots.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from train import locks

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "sweeps"

MNIST_SPLITS = dict(train_split="train[:54000]", validation_split="train[54000:]")
SEEDS = (1, 2)  # besides seed 0, at each method's reference point


@dataclasses.dataclass(frozen=True)
class Method:
  """A method as data.

  Attributes:
    id: directory name.
    label: display name.
    overrides: config overrides (on top of the experiment's).
    knob: the config key of the sparsity knob swept to a front (None: dense).
    reference: the knob's value where the method is tuned and seeded.
    front: the knob's values of the front (the reference is one of them).
    tune: (config key, values): the trials on validation; every method gets as many.
    note: what the table says about it.
    seeds: the seeds run at the reference besides seed 0.
    refine: whether the grid gets its refining trial.
    trend: the knob is not a sparsity target (e.g. an init scale): the plot labels each point
      with its value, as the order of compression does not follow it.
  """
  id: str
  label: str
  overrides: dict[str, Any]
  knob: str | None
  reference: Any
  front: tuple[Any, ...]
  tune: tuple[str, tuple[Any, ...]]
  note: str = ""
  seeds: tuple[int, ...] = SEEDS
  refine: bool = True
  trend: bool = False

  @staticmethod
  def front_order(value: Any) -> Any:
    return (value is None, value if value is not None else 0)


@dataclasses.dataclass(frozen=True)
class Experiment:
  id: str
  label: str
  config: str  # a file under train/configs
  overrides: dict[str, Any]
  methods: tuple[Method, ...]
  published: tuple[tuple[str, float, float, str], ...] = ()  # (method, error %, compression, source)
  # The same methods at a shorter budget, whose trials choose the tuned setting (None: tuned at
  # this budget). Its methods have no front and no seeds: those train here.
  tuning: Experiment | None = None


def tuning_stage(experiment: Experiment, method: Method) -> tuple[Experiment, Method]:
  """Where the method is tuned: the experiment itself, or its shorter-budget stage (the method
  there has its schedule scaled to that budget)."""
  if experiment.tuning is None:
    return experiment, method
  return experiment.tuning, next(m for m in experiment.tuning.methods if m.id == method.id)


def with_tuning(experiment: Experiment, epochs: int, build) -> Experiment:
  """``experiment`` tuned at ``epochs``: ``build(epochs)`` without fronts and seeds, named
  <id>_tuning."""
  stage = build(epochs)
  stage = dataclasses.replace(
      stage, id=f"{experiment.id}_tuning", label=f"{stage.label} (tuning, {epochs} epochs)",
      methods=tuple(dataclasses.replace(m, front=(), seeds=()) for m in stage.methods),
      published=())
  return dataclasses.replace(experiment, tuning=stage)


def front_values(experiment: Experiment, method: Method) -> list[Any]:
  """The knob values trained at seed 0 after the tuning: the front, less the reference when a
  tune trial has trained it at this budget."""
  values = sorted({*method.front, method.reference}, key=method.front_order)
  if experiment.tuning is None:
    values = [v for v in values if v != method.reference]
  return values


@dataclasses.dataclass(frozen=True)
class Trial:
  method: Method
  stage: str  # "tune", "front" or "seed"
  knob_value: Any
  setting: Any  # the tuned key's value
  seed: int

  @property
  def id(self) -> str:
    knob = f"{self.method.knob}={self.knob_value}" if self.method.knob else "dense"
    return f"{self.method.id}/{knob}_{self.method.tune[0]}={self.setting}_seed={self.seed}"

  def overrides(self, experiment: Experiment) -> dict[str, Any]:
    out = {**experiment.overrides, **self.method.overrides, self.method.tune[0]: self.setting,
           "seed": self.seed}
    if self.method.knob:
      out[self.method.knob] = self.knob_value
    return out


# Kernel sparsities for ~10×, ~30×, ~90×, ~280× compression of LeNet-300-100 (biases dense).
TARGETS = (0.9, 0.97, 0.99, 0.998)
SGD = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4, lr_schedule="cosine", l1=0.0)
# LeNet-300-100 chose the largest of three rates (0.02, 0.05, 0.1; xrda 0.25, 0.5, 1.0) for xrda
# and dense SGD: every method there gets a fourth, larger one; later experiments centre their
# three on those choices.
SGD_LRS_4 = ("learning_rate", (0.02, 0.05, 0.1, 0.2))
SGD_LRS_HIGH = ("learning_rate", (0.05, 0.1, 0.2))
XRDA_LRS_HIGH = ("learning_rate", (0.5, 1.0, 2.0))
# On LeNet-5 (no batch norm) SGD with momentum ≥ 0.1 and xrda ≥ 1.0 diverge in the first epoch;
# MNIST chose 0.05 and 0.5: Fashion-MNIST's grids are centred there.
LENET5_SGD_LRS = (0.025, 0.05, 0.1)
LENET5_XRDA_LRS = (0.25, 0.5, 1.0)


def _gradual(epochs: int) -> dict[str, Any]:
  """Zhu & Gupta's schedule: prune from a twentieth of the budget (at least epoch 1) to half of
  it; at CIFAR-10's 2 tuning epochs it starts at once and ends after the first."""
  return dict(SGD, pruning="gradual",
              pruning_begin_epoch=min(max(1, epochs // 20), epochs // 2 - 1),
              pruning_end_epoch=epochs // 2, pruning_frequency=100)


def _lenet300100(epochs: int = 200) -> Experiment:
  gradual = _gradual(epochs)
  dst = dict(SGD, dst_distribution="erk", dst_update_steps=100, dst_end_fraction=0.75)
  methods = (
      Method("xrda", "xRDA (log-l1)", dict(optimizer="xrda", momentum_timescale=9.5,
                                           maximum_factor=500.0, weight_decay=5e-4),
             "l1", 5e-6, (1.5e-6, 5e-6, 8e-6, 1.5e-5, 4e-5),
             ("learning_rate", (0.25, 0.5, 1.0, 2.0)),
             note="five front points like the others (their four targets and the reference)"),
      Method("sgd", "dense SGD", SGD, None, None, (), SGD_LRS_4),
      Method("gmp_layer", "gradual pruning, per layer", gradual, "pruning_sparsity", 0.98,
             TARGETS, SGD_LRS_4),
      Method("gmp_global", "gradual pruning, global", dict(gradual, pruning_scope="global"),
             "pruning_sparsity", 0.98, TARGETS, SGD_LRS_4),
      Method("gmp_erk", "gradual pruning, ERK", dict(gradual, pruning_scope="erk"),
             "pruning_sparsity", 0.98, TARGETS, SGD_LRS_4),
      Method("rigl_erk", "RigL (ERK)", dict(dst, optimizer="rigl"), "dst_sparsity", 0.98, TARGETS,
             SGD_LRS_4, note="ERK: uniform keeps the first layer dense, 88% of LeNet-300-100's "
             "weights, so it cannot reach 10×"),
      Method("set_erk", "SET (ERK)", dict(dst, optimizer="set"), "dst_sparsity", 0.98, TARGETS,
             SGD_LRS_4),
      # The published protocol (PWE 20, TWT 0.05, λ 1e-4, SGD 0.1, no momentum); its knob is λ.
      Method("lobster", "LOBSTER", dict(optimizer="lobster", momentum=0.0, weight_decay=0.0,
                                        lr_schedule="constant", lobster_patience=20,
                                        lobster_tolerance=0.05),
             "lobster_strength", 1e-4, (5e-5, 1e-4, 2e-4, 4e-4),
             ("learning_rate", (0.05, 0.1, 0.2, 0.4))),
  )
  return Experiment(
      "lenet300100_mnist" + ("" if epochs == 200 else f"_{epochs}ep"), "LeNet-300-100, MNIST",
      "train/configs/lenet300100_mnist_xrda.py",
      dict(MNIST_SPLITS, num_epochs=epochs, progress_bar=False), methods,
      published=(("dense", 1.64, 1.0, "LOBSTER paper, table 2"),
                 ("Han pruning", 1.59, 12.0, "LOBSTER paper, table 2"),
                 ("Sparse VD", 1.92, 68.0, "LOBSTER paper, table 2"),
                 ("LOBSTER", 1.65, 50.0, "LOBSTER paper, table 2"),
                 ("LOBSTER", 1.95, 115.0, "LOBSTER paper, table 2")))


def _lenet5(epochs: int = 100, tuned_apart: bool = True) -> Experiment:
  """Caffe LeNet-5 (20-50-500-10): xrda's front and 3 seeds; gradual pruning's front (seed 0);
  affine scaling at Fedorov & Rao's (2018) protocol as far as the budget allows, at one point. Every method
  is tuned at a quarter of the budget: at 100 epochs its 16 tune trials alone would take 14 h."""
  gradual = _gradual(epochs)
  # Paper 002, Table 1: greedy refresh, one layer per iteration, each of the 4 layers twice,
  # then magnitude pruning and retraining. Its 1000 epochs per iteration become a tenth of the
  # budget, and the retraining (silent in the paper) the last fifth; global pruning, as its
  # per-layer thresholds are silent.
  period = epochs // 10
  affine = dict(SGD, optimizer="affine_scaling", affine_method="l1", affine_tau=1e-2,
                affine_greedy=True, affine_leafwise=True, affine_iterations=8,
                affine_period_epochs=period, pruning="once", pruning_begin_epoch=8 * period,
                pruning_scope="global")
  methods = (
      Method("xrda", "xRDA (log-l1)", dict(optimizer="xrda", momentum_timescale=9.5,
                                           maximum_factor=500.0, weight_decay=5e-4),
             "l1", 5e-6, (1.5e-6, 5e-6, 1.5e-5, 4e-5), XRDA_LRS_HIGH,
             note="the front of LeNet-300-100 (which reached 313× at 4e-5), for Sparse VD's 280×"),
      Method("sgd", "dense SGD", SGD, None, None, (), SGD_LRS_HIGH, seeds=()),
      # ERK: the strongest baseline on LeNet-300-100 (1.48 ± 0.08% at 47×).
      Method("gmp_erk", "gradual pruning, ERK", dict(gradual, pruning_scope="erk"),
             "pruning_sparsity", 0.99, TARGETS, SGD_LRS_HIGH, seeds=()),
      Method("affine_l1", "affine scaling, re-weighted l1 (greedy)", affine,
             "pruning_sparsity", 0.99, (), SGD_LRS_HIGH, seeds=(),
             note=f"Fedorov & Rao's (2018) protocol with {period} epochs per iteration instead of 1000; "
                  "one point, near the paper's 78×"),
  )
  experiment = Experiment(
      "lenet5_mnist" + ("" if epochs == 100 else f"_{epochs}ep"), "LeNet-5, MNIST",
      "train/configs/lenet5_mnist_xrda.py",
      dict(MNIST_SPLITS, num_epochs=epochs, progress_bar=False), methods,
      published=(("dense", 0.80, 1.0, "SPEC reference table"),
                 ("Han pruning", 0.77, 12.0, "SPEC reference table"),
                 ("Sparse VD", 0.75, 280.0, "SPEC reference table"),
                 ("DNS", 0.91, 111.0, "Fedorov & Rao (2018), table 1"),
                 ("LOBSTER", 0.79, 230.0, "LOBSTER paper"),
                 ("re-weighted l1", 1.16, 78.1, "Fedorov & Rao (2018), table 1")))
  if not tuned_apart:
    return experiment
  return with_tuning(experiment, max(1, epochs // 4),
                     functools.partial(_lenet5, tuned_apart=False))


def _rda_asr(epochs: int = 300) -> Experiment:
  """Paper 001's trend on LeNet-300-100: RDA from a uniform init scaled by s, then adaptive
  sparse retraining (zeros frozen) for the last third, as its 2400 + 1200 epochs. Its γ range
  and λ were lost in the text: γ is tuned at s = 3 and λ = 1e-4, then kept at λ = 1e-3.

  The final threshold is λ·sqrt(N)/γ (N steps): at λ = 1e-4 it is ~0.009, a seventh of the
  s = 1 init bound of the first layer (0.062), so little can be zeroed; at λ = 1e-3 it is ~0.09,
  above that bound."""
  rda = dict(optimizer="rda", init="uniform", l1=1e-4, weight_decay=0.0,
             freeze_zeros_epoch=2 * epochs // 3)
  scales = (1.0, 2.0, 3.0, 5.0, 10.0, 100.0, 1000.0)
  note = "the knob is the init scale s (Jia et al., 2020, table 1): its trend, not a front"
  methods = (
      Method("rda_asr", "RDA + ASR, λ 1e-4", rda, "init_scale", 3.0, scales,
             ("rda_gamma", (2.0, 4.0, 8.0)), seeds=(), note=note, trend=True),
      Method("rda_asr_l1e-3", "RDA + ASR, λ 1e-3", dict(rda, l1=1e-3), "init_scale", 3.0,
             scales, ("rda_gamma", (4.0,)), seeds=(), refine=False, trend=True,
             note=note + "; γ as tuned at λ 1e-4"),
  )
  return Experiment(
      "rda_asr_lenet300100_mnist" + ("" if epochs == 300 else f"_{epochs}ep"),
      "RDA + ASR against the init scale, LeNet-300-100, MNIST",
      "train/configs/lenet300100_mnist_xrda.py",
      dict(MNIST_SPLITS, num_epochs=epochs, progress_bar=False), methods)


def _lobster_long(epochs: int = 1000) -> Experiment:
  """LOBSTER as published on LeNet-300-100 (SGD 0.1, λ 1e-4, PWE 20, TWT 0.05), untuned, at the
  budget its protocol asks: it prunes once per plateau (≥ PWE epochs) and the paper trains until
  pruning stops, so 200 epochs measure its pace, not its end point."""
  lobster = dict(optimizer="lobster", momentum=0.0, weight_decay=0.0, lr_schedule="constant",
                 lobster_patience=20, lobster_tolerance=0.05)
  methods = (Method("lobster", "LOBSTER, published settings", lobster, "lobster_strength", 1e-4,
                    (), ("learning_rate", (0.1,)), seeds=(), refine=False,
                    note=f"{epochs} epochs, the published settings untuned"),)
  return Experiment(
      "lobster_lenet300100_mnist" + ("" if epochs == 1000 else f"_{epochs}ep"),
      "LOBSTER at its own budget, LeNet-300-100, MNIST", "train/configs/lenet300100_mnist_xrda.py",
      dict(MNIST_SPLITS, num_epochs=epochs, progress_bar=False), methods,
      published=(("LOBSTER", 1.65, 50.0, "LOBSTER paper, table 2"),
                 ("LOBSTER", 1.95, 115.0, "LOBSTER paper, table 2")))


def _one_point_each(xrda: dict[str, Any], l1: float, xrda_lrs: tuple[float, ...],
                    sgd_lrs: tuple[float, ...], sparsity: float, epochs: int,
                    lobster: dict[str, Any] | None,
                    xrda_front: tuple[float, ...] = ()) -> tuple[Method, ...]:
  """One tuned point per method (no extra seeds), the baselines at ``sparsity``; xrda's λ
  does not set its compression, so ``xrda_front`` adds λs (at the tuned rate) to reach it."""
  sgd = ("learning_rate", sgd_lrs)
  gradual = _gradual(epochs)
  dst = dict(SGD, dst_distribution="erk", dst_update_steps=100, dst_end_fraction=0.75)
  methods = [
      Method("xrda", "xRDA (log-l1)", xrda, "l1", l1, xrda_front, ("learning_rate", xrda_lrs),
             seeds=()),
      Method("sgd", "dense SGD", SGD, None, None, (), sgd, seeds=()),
      Method("gmp_erk", "gradual pruning, ERK", dict(gradual, pruning_scope="erk"),
             "pruning_sparsity", sparsity, (), sgd, seeds=()),
      Method("rigl_erk", "RigL (ERK)", dict(dst, optimizer="rigl"), "dst_sparsity", sparsity, (),
             sgd, seeds=()),
  ]
  if lobster is not None:
    lobster = dict(lobster)
    note = lobster.pop("note", "")
    methods.append(Method("lobster", "LOBSTER", dict(SGD, optimizer="lobster", **lobster),
                          "lobster_strength", 1e-4, (), sgd, seeds=(), note=note))
  return tuple(methods)


def _lenet5_fashion(epochs: int = 40, tuned_apart: bool = True) -> Experiment:
  """LeNet-5 on Fashion-MNIST, one point per method, tuned at a quarter of the budget; the
  baselines at LOBSTER's 23.3×."""
  xrda = dict(optimizer="xrda", momentum_timescale=9.5, maximum_factor=500.0, weight_decay=5e-4)
  # The paper's patience (20 epochs) would prune at most once in this budget: scaled to it.
  lobster = dict(momentum=0.0, weight_decay=0.0, lr_schedule="constant",
                 lobster_patience=max(1, epochs // 8), lobster_tolerance=0.1,
                 note=f"patience {max(1, epochs // 8)} epochs (paper: 20), TWT 0.1, "
                      "scaled to the budget")
  experiment = Experiment(
      "lenet5_fashion_mnist" + ("" if epochs == 40 else f"_{epochs}ep"),
      "LeNet-5, Fashion-MNIST", "train/configs/lenet5_mnist_xrda.py",
      dict(MNIST_SPLITS, dataset="fashion_mnist", num_epochs=epochs, progress_bar=False),
      # λ 2e-6 (tuned there) gave 12.4×: two more λs to bracket the baselines' 23.3×.
      _one_point_each(xrda, 2e-6, LENET5_XRDA_LRS, LENET5_SGD_LRS, 1 - 1 / 23.3, epochs,
                      lobster, xrda_front=(2e-6, 5e-6, 1e-5)),
      published=(("dense", 8.10, 1.0, "LOBSTER paper, table 4"),
                 ("LOBSTER", 8.47, 23.3, "LOBSTER paper, table 4")))
  if not tuned_apart:
    return experiment
  return with_tuning(experiment, max(1, epochs // 4),
                     functools.partial(_lenet5_fashion, tuned_apart=False))


def _resnet20_cifar10(epochs: int = 10, tuned_apart: bool = True) -> Experiment:
  """ResNet-20 on CIFAR-10 at what a 2-core CPU affords (about 7 minutes an epoch per core),
  one point per method, tuned at a quarter of the budget like LeNet-5 (at half, the 16 tune
  trials alone would take 9 h of the 2 cores); the baselines at xrda's compression."""
  xrda = dict(optimizer="xrda", momentum_timescale=12.37, magnitude_timescale=12.37,
              maximum_factor=500.0, weight_decay=5e-4)
  experiment = Experiment(
      "resnet20_cifar10" + ("" if epochs == 10 else f"_{epochs}ep"), "ResNet-20, CIFAR-10",
      "train/configs/resnet20_cifar10_xrda_cpu.py",
      dict(train_split="train[:45000]", validation_split="train[45000:]", num_epochs=epochs,
           progress_bar=False),
      # xrda's λ 2.5e-5 run (lr 1.0, seed 0) kept 10,245 of the 269,722 parameters (26.3×),
      # 1,386 of them batch-norm and bias terms, which no method prunes: the sparse baselines
      # keep as many kernel weights.
      _one_point_each(xrda, 2.5e-5, (0.1, 0.25, 0.5), (0.05, 0.1, 0.2),
                      round(1 - (10245 - 1386) / (269722 - 1386), 5), epochs, None),
      published=(("dense ResNet-20", 8.75, 1.0, "He et al. 2016, 182 epochs"),))
  if not tuned_apart:
    return experiment
  return with_tuning(experiment, max(1, epochs // 4),
                     functools.partial(_resnet20_cifar10, tuned_apart=False))


EXPERIMENTS = {"lenet300100_mnist": _lenet300100, "lenet5_mnist": _lenet5,
               "rda_asr_lenet300100_mnist": _rda_asr, "lobster_lenet300100_mnist": _lobster_long,
               # 1000 epochs ended at 34× and rising: twice as long, for its 50× and 115×.
               "lobster_lenet300100_mnist_2000ep": functools.partial(_lobster_long, 2000),
               "lenet5_fashion_mnist": _lenet5_fashion,
               "resnet20_cifar10": _resnet20_cifar10}  # name -> (epochs=its budget) -> Experiment


# --------------------------------------------------------------------------- trial state


def workdir(experiment: Experiment, trial: Trial) -> Path:
  return RUNS / experiment.id / trial.id


def _local_records(experiment: Experiment, trial: Trial) -> list[dict]:
  metrics = workdir(experiment, trial) / "metrics.jsonl"
  lines = metrics.read_text().splitlines() if metrics.exists() else []
  return [json.loads(line) for line in lines]


def last_record(experiment: Experiment, trial: Trial) -> dict | None:
  """The workdir's last complete record (the runner asks often: only that line is parsed)."""
  metrics = workdir(experiment, trial) / "metrics.jsonl"
  lines = metrics.read_text().splitlines() if metrics.exists() else []
  for line in reversed(lines):
    try:
      return json.loads(line)
    except json.JSONDecodeError:  # a line being written
      continue
  return None


def records_at(experiment: Experiment, trial: Trial, epochs: list[int]) -> list[dict]:
  """The trial's records of ``epochs`` that it has got to, in one read; from the archive when
  the workdir has not finished the trial but the archive has."""
  entry = None if _local_final(experiment, trial) else _archived_entry(experiment, trial)
  records = _local_records(experiment, trial) if entry is None else entry.get("records", [])
  wanted = set(epochs)
  return [r for r in records if r["epoch"] in wanted]


def record_at(experiment: Experiment, trial: Trial, epoch: int) -> dict | None:
  """The trial's record of ``epoch`` (None if it has not got there)."""
  return next(iter(records_at(experiment, trial, [epoch])), None)


DIVERGED = "diverged.txt"  # in a trial's workdir: the loop's message when training diverged


def kept_epochs(experiment: Experiment, trial: Trial) -> list[int]:
  """Epochs whose records the archive keeps besides the last: where RDA + ASR's retraining
  began, and the end of each of affine scaling's re-weighting iterations (Fedorov & Rao, 2018, Fig. 1)."""
  o = trial.overrides(experiment)
  epochs = [] if o.get("freeze_zeros_epoch") is None else [o["freeze_zeros_epoch"]]
  if o.get("optimizer") == "affine_scaling" and o.get("affine_iterations"):
    epochs += [o["affine_period_epochs"] * t for t in range(1, o["affine_iterations"] + 1)]
  return sorted(set(epochs))


def _local_final(experiment: Experiment, trial: Trial) -> dict | None:
  diverged = workdir(experiment, trial) / DIVERGED
  if diverged.exists():
    return {"diverged": diverged.read_text().strip()}
  record = last_record(experiment, trial)
  if record is None or record["epoch"] < experiment.overrides["num_epochs"]:
    return None
  return record


def final_record(experiment: Experiment, trial: Trial) -> dict | None:
  """The trial's last epoch record if it has trained every epoch, ``{"diverged": message}`` if
  its training diverged (an outcome too: it is not run again), else None. A trial whose workdir
  is gone counts by its archived outcome."""
  record = _local_final(experiment, trial)
  if record is None:
    entry = _archived_entry(experiment, trial)
    if entry is not None:
      record = {"diverged": entry["diverged"]} if "diverged" in entry else entry["records"][-1]
  return record


# Finished trials' outcomes, committed beside the report: workdirs live under runs/ (not in
# git), a new machine starts without them, and rerunning what is archived would cost hours.
ARCHIVE = REPO / "benchmarks" / "results" / "sweeps"


def archive_path(experiment: Experiment) -> Path:
  return ARCHIVE / f"{experiment.id}.trials.json"


@functools.lru_cache(maxsize=32)
def _read_archive(path: Path, stamp: tuple[int, int, int]) -> dict[str, dict]:
  del stamp  # (part of the cache key: a rewritten archive is read again)
  return json.loads(path.read_text())


def archived(experiment: Experiment) -> dict[str, dict]:
  """{trial id: {"records": [...] or "diverged": message, "config", "overrides", "commit"}}."""
  path = archive_path(experiment)
  if not path.exists():
    return {}
  stat = path.stat()
  return _read_archive(path, (stat.st_mtime_ns, stat.st_ino, stat.st_size))


def _definition(experiment: Experiment, trial: Trial) -> dict[str, Any]:
  """What the trial trained, as the archive stores it (JSON types)."""
  return json.loads(json.dumps({"config": experiment.config,
                                "overrides": trial.overrides(experiment)}))


def _archived_entry(experiment: Experiment, trial: Trial) -> dict | None:
  """The trial's archived outcome, if it was trained as the experiment now defines it (an
  experiment changed since, e.g. its epochs, does not take old outcomes for new ones)."""
  entry = archived(experiment).get(trial.id)
  if entry is None or {k: entry.get(k) for k in ("config", "overrides")} != _definition(
      experiment, trial):
    return None
  if "diverged" not in entry and entry["records"][-1]["epoch"] < experiment.overrides["num_epochs"]:
    return None
  return entry


def known_trials(experiment: Experiment) -> list[Trial]:
  """Every trial the plan has named so far (fronts and seeds once their tuning is known)."""
  trials = []
  for method in experiment.methods:
    if experiment.tuning is None:  # (else they are the tuning stage's own)
      trials += all_tune_trials(experiment, method)
    best = tuned_setting(experiment, method)
    if best is not None:
      trials += [Trial(method, "front", v, best, 0) for v in front_values(experiment, method)]
      trials += [Trial(method, "seed", method.reference, best, s) for s in method.seeds]
  return trials


def archive(experiment: Experiment) -> int:
  """Copies the outcome of every trial finished in its workdir into the archive: the final
  record, and the record where retraining began if it retrains (and its tuning stage's).
  Returns how many changed."""
  earlier = 0 if experiment.tuning is None else archive(experiment.tuning)
  path = archive_path(experiment)
  path.parent.mkdir(parents=True, exist_ok=True)
  with locks.exclusive(path.with_name(f".{path.name}.lock")):  # the runner and a report at once
    entries = dict(archived(experiment))
    changed = 0
    for trial in known_trials(experiment):
      record = _local_final(experiment, trial)
      if record is None:
        continue
      commit = workdir(experiment, trial) / "commit.txt"
      entry: dict[str, Any] = {**_definition(experiment, trial),
                               "commit": commit.read_text().strip() if commit.exists() else None}
      if "diverged" in record:
        entry["diverged"] = record["diverged"]
      else:
        kept = records_at(experiment, trial, kept_epochs(experiment, trial))
        entry["records"] = [r for r in kept if r["epoch"] < record["epoch"]] + [record]
      if entries.get(trial.id) != entry:
        changed += 1
        entries[trial.id] = entry
    if changed:
      temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
      temporary.write_text(json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
      temporary.replace(path)
  return earlier + changed


def finished(experiment: Experiment, trial: Trial) -> bool:
  return final_record(experiment, trial) is not None


def tune_trials(method: Method) -> list[Trial]:
  """The method's tuning grid (at its reference knob value, seed 0)."""
  return [Trial(method, "tune", method.reference, v, 0) for v in method.tune[1]]


def _scores(experiment: Experiment, trials: list[Trial]) -> dict[Any, float] | None:
  """{setting: final validation accuracy (-inf: diverged)}; None until every trial finished."""
  records = [final_record(experiment, t) for t in trials]
  if any(r is None for r in records):
    return None
  return {t.setting: -math.inf if "diverged" in r else r["val_accuracy"]
          for t, r in zip(trials, records)}


def refine_trial(experiment: Experiment, method: Method) -> Trial | None:
  """One more tuning trial after the grid, for every method alike: a step beyond the grid's edge
  when the grid's best is on it, else halfway (geometrically) between the best and its better
  neighbour. None until the grid has finished, when every grid value diverged, or when the
  method does not refine."""
  experiment, method = tuning_stage(experiment, method)
  scores = _scores(experiment, tune_trials(method))
  if not method.refine or scores is None or len(scores) < 2 or max(scores.values()) == -math.inf:
    return None
  values = sorted(scores)
  if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
    return None  # geometric steps need positive numbers
  best = max(values, key=scores.__getitem__)
  i = values.index(best)
  if i in (0, len(values) - 1):
    value = best * best / values[1 if i == 0 else -2]
  else:
    value = math.sqrt(best * max(values[i - 1], values[i + 1], key=scores.__getitem__))
  if all(isinstance(v, int) for v in values):
    rounded = [round(value)]
  else:  # short, unless that lands on a value already tried
    rounded = [float(f"{value:.{digits}g}") for digits in (3, 6, 12)]
  value = next((v for v in rounded if v not in values), None)
  return None if value is None else Trial(method, "tune", method.reference, value, 0)


def all_tune_trials(experiment: Experiment, method: Method) -> list[Trial]:
  """The grid, and its refinement once the grid has told where it goes (the trials of the
  method's tuning stage)."""
  extra = refine_trial(experiment, method)
  return tune_trials(tuning_stage(experiment, method)[1]) + ([] if extra is None else [extra])


def tuned_setting(experiment: Experiment, method: Method) -> Any | None:
  """The tune trial with the best final validation accuracy (None until all, the refinement
  included, have finished, or if every one diverged); a tie goes to the earlier trial, the
  grid's before its refinement (LeNet-5's xrda: lr 0.5 and 0.25 both 65 errors in 6,000).
  Tuned at a shorter budget, a setting whose full-budget reference run diverged gives way to the
  next best on validation (Fashion-MNIST's RigL: lr 0.2 trained 10 epochs, diverged in 40)."""
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
  record = final_record(experiment, Trial(method, "front", method.reference, setting, 0))
  return record is not None and "diverged" in record


def plan(experiment: Experiment, methods: list[Method]) -> tuple[list[Trial], list[Trial]]:
  """(trials that can run now, trials that wait for their method's tuning). A tuning stage apart
  (``experiment.tuning``) is planned on its own: the runner queues it first."""
  ready, waiting = [], []
  for method in methods:  # in order: a method's front runs before the next method's tuning
    if experiment.tuning is None:
      ready += all_tune_trials(experiment, method)
    best = tuned_setting(experiment, method)
    later = [Trial(method, "front", v, best, 0) for v in front_values(experiment, method)]
    later += [Trial(method, "seed", method.reference, best, s) for s in method.seeds]
    if best is None:  # tuning unfinished, or every setting diverged: nothing more to run
      tuned = _scores(tuning_stage(experiment, method)[0], all_tune_trials(experiment, method))
      waiting += [] if tuned is not None else later
    else:
      ready += later
  return [t for t in ready if not finished(experiment, t)], waiting


def _commit() -> str:
  return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                        text=True, check=False).stdout.strip()


def train_command(experiment: Experiment, trial: Trial) -> list[str]:
  """The trial's training command, run from the repository's root."""
  directory = workdir(experiment, trial)
  if directory.is_relative_to(REPO):
    directory = directory.relative_to(REPO)
  flags = [f"--config.{k}={v}" for k, v in trial.overrides(experiment).items()]
  return ["python", "-m", "train.main", f"--config={experiment.config}", f"--workdir={directory}",
          *flags]


def launch(experiment: Experiment, trial: Trial, cores: set[int] | None = None) -> subprocess.Popen:
  """Starts the trial's training; ``cores``: the CPUs it may use (None: any)."""
  directory = workdir(experiment, trial)
  directory.mkdir(parents=True, exist_ok=True)
  commit = directory / "commit.txt"
  if not commit.exists():
    commit.write_text(_commit() + "\n")
  command = [sys.executable, *train_command(experiment, trial)[1:]]
  log = open(directory / "log.txt", "a")  # pylint: disable=consider-using-with
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  pin = None if cores is None else functools.partial(os.sched_setaffinity, 0, cores)
  # Its own session: a Ctrl-C in the terminal reaches the runner only, which then stops each
  # training with one SIGTERM (a second signal would cut a training's checkpoint short).
  proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                          preexec_fn=pin, start_new_session=True)
  proc.workdir = directory
  return proc


def _training_elsewhere(directory: Path) -> bool:
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


def _diverged(directory: Path) -> bool:
  """Records the loop's divergence message, if that is why the trial stopped."""
  log = directory / "log.txt"
  lines = log.read_text().splitlines() if log.exists() else []
  message = next((l for l in reversed(lines) if "Training diverged" in l), None)
  if message is not None:
    (directory / DIVERGED).write_text(message[message.index("Training diverged"):] + "\n")
  return message is not None


def run(queue: list[tuple[Experiment, list[Method]]], workers: int) -> None:
  """Runs the queue's trials, ``workers`` at a time: an experiment's before the next one's,
  which fill the workers while the first one's wait for their tuning; within an experiment and
  its tuning stage, the longest trials first."""
  running: dict[str, tuple[subprocess.Popen, int]] = {}
  free = list(range(workers))
  slots = core_slots(workers)
  failed: set[str] = set()
  with _stop_requests() as stop:
    try:
      while not stop:
        if not _step(queue, workers, running, free, slots, failed, stop):
          return
        time.sleep(5)
    finally:  # a signal, or the runner failing: no training is left without its runner
      _stop_trainings(running, stop)
      for experiment, _ in queue:
        archive(experiment)
    print("stopped: rerun the same command to resume", flush=True)
    raise SystemExit(128 + stop[0])


FINISHED = "finished: every trial is done; `python -m benchmarks.report --all` writes the results"
STOP_GRACE_S = 600  # for a training's checkpoint; then (or at a second signal) it is killed


def _stop_trainings(running: dict[str, tuple[subprocess.Popen, int]], stop: list[int]) -> None:
  """One SIGTERM each (they save a checkpoint and exit), then waits; kills what outlasts the
  grace period or a second signal to the runner."""
  for proc, _ in running.values():
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
  signals, deadline = len(stop), time.monotonic() + STOP_GRACE_S
  for key, (proc, _) in running.items():
    while proc.poll() is None:
      if len(stop) > max(signals, 1) or time.monotonic() > deadline:
        proc.kill()
        proc.wait()
        break
      time.sleep(0.2)
    print(f"{time.strftime('%H:%M:%S')} {key}: stopped (exit {proc.returncode})", flush=True)
  running.clear()


@contextlib.contextmanager
def _stop_requests():
  """The signals (SIGINT, SIGTERM, SIGHUP) received while the runner runs, for it to stop its
  trials."""
  requested: list[int] = []
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
  for s in previous:
    signal.signal(s, lambda signum, frame: requested.append(signum))
  try:
    yield requested
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _step(queue: list[tuple[Experiment, list[Method]]], workers: int,
          running: dict[str, tuple[subprocess.Popen, int]], free: list[int],
          slots: list[set[int] | None], failed: set[str], stop: list[int]) -> bool:
  """Collects the trials that ended and starts what can run; False when nothing is left."""
  ended = [key for key, (proc, _) in running.items() if proc.poll() is not None]
  for key in ended:
    proc, slot = running.pop(key)
    free.append(slot)
    status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    if proc.returncode and _diverged(proc.workdir):
      status = "diverged"
    elif proc.returncode:
      failed.add(key)
    print(f"{time.strftime('%H:%M:%S')} {key}: {status}", flush=True)
  if ended:
    for experiment, _ in queue:
      archive(experiment)
  ready, waiting = [], []
  for experiment, methods in queue:
    now, later = plan(experiment, methods)
    ready += [(experiment, t) for t in now]
    waiting += later
  ready = [(e, t) for e, t in ready if f"{e.id}/{t.id}" not in running.keys() | failed]
  # Experiments in the queue's order (a tuning stage with its experiment), within one the
  # longest first (stable): a full-budget run that one method's tuning unlocked starts before
  # the other methods' short tune trials, so the experiment does not end on long runs alone.
  order: dict[str, int] = {}
  for experiment, _ in queue:
    order.setdefault(experiment.id, len(order))
    if experiment.tuning is not None:
      order[experiment.tuning.id] = order[experiment.id]
  ready.sort(key=lambda pair: (order[pair[0].id], -pair[0].overrides["num_epochs"]))
  all_done = not (ready or waiting or failed)  # not if a ready one trains under another runner
  while ready and len(running) < workers and not stop:
    experiment, trial = ready.pop(0)
    if _training_elsewhere(workdir(experiment, trial)):  # e.g. left by a runner killed hard
      continue
    slot = free.pop(0)
    key = f"{experiment.id}/{trial.id}"
    running[key] = (launch(experiment, trial, slots[slot]), slot)
    print(f"{time.strftime('%H:%M:%S')} {key}: started", flush=True)
  if not running:
    if waiting or failed:
      print(f"stopped: {len(failed)} failed, {len(waiting)} waiting on them", flush=True)
    elif all_done:
      print(FINISHED, flush=True)
    return False
  return True


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--experiment", required=True,
                      help=f"comma-separated, run in this order; of {', '.join(EXPERIMENTS)}")
  parser.add_argument("--methods", default="", help="comma-separated method ids (default: all)")
  parser.add_argument("--workers", type=int, default=2)
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
  queue = []
  for name in names:
    experiment = EXPERIMENTS[name]() if args.epochs is None else EXPERIMENTS[name](args.epochs)
    for stage in [experiment.tuning] * (experiment.tuning is not None) + [experiment]:
      known = {m.id: m for m in stage.methods}
      queue.append((stage, [known[s] for s in wanted if s in known] if wanted
                    else list(stage.methods)))
  if args.plan:
    left = 0
    for experiment, methods in queue:
      ready, waiting = plan(experiment, methods)
      for t in ready:
        print("ready  ", experiment.id, t.id)
      for t in waiting:
        print("waiting", experiment.id, t.id)
      left += len(ready) + len(waiting)
    if not left:
      print(FINISHED)
    return
  run(queue, args.workers)


if __name__ == "__main__":
  main()
