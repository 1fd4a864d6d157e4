"""The papers' budgets: each method tuned with the same trials on validation, its sparsity knob
swept to a front, and seeds at its reference point, run by Optuna workers on one machine or many.

    python -m benchmarks.sweeps --experiment lenet300100_mnist [--workers 2] [--methods xrda,sgd]
    python -m benchmarks.sweeps --experiment lenet300100_mnist --plan   # what would run
    python -m benchmarks.sweeps --experiment lenet5_mnist --storage postgresql://host/db  # on N

Stages per method, in order, each trial its own workdir under runs/sweeps/<experiment>/:
  1. tune:  the method's `tune` grid at its `reference` knob value, seed 0, and one refining
            trial (and, with `edge_trial`, more beyond the edge while the choice is still on
            one, up to that many); where training is dear (LeNet-5, CIFAR-10) at a shorter budget, the same for
            every method, in runs/sweeps/<experiment>_tuning/ (a successive-halving stage);
  2. front: every `front` knob value with the tuned setting, seed 0 (the reference too when it
            was tuned at the shorter budget);
  3. seeds: the reference point with the tuned setting, seeds 1 and 2 (or the method's seeds,
            and at its `seeded_at` values too, where methods are compared at equal sparsity).
A method may tune several knobs together (a grid), or borrow another's tuned setting
(`tuned_as`: an ablation changes one thing). The workers take what can run seed by seed across
the methods tuned on their own, ablations after them (``engine.schedule``; `--plan` prints it).
The tuned setting is the tune trial with the highest final validation accuracy; the test set is
never read to choose. Rerunning resumes: finished trials are skipped and cut ones resume from
their checkpoints (each workdir records the commit that started it); workers whose package
changes under them (a checkout) stop their trainings and start again under the new definitions.
`benchmarks/report.py`
turns the finished trials into tables and plots.

Rooms: ``catalogue`` (the experiments as data), ``outcomes`` (each trial's records: workdir,
storage, archive), ``policy`` (the stage order), ``engine`` (the Optuna workers), ``cli``.
"""

from benchmarks.sweeps.catalogue import (EXPERIMENTS, Experiment, Method, Trial, front_values,
                                         seeded_values, tuning_stage, with_tuning)
from benchmarks.sweeps.cli import main
from benchmarks.sweeps.engine import FINISHED, Sweep, core_slots, launch, train_command
from benchmarks.sweeps.outcomes import (DIVERGED, archive_path, final_record, finished,
                                        kept_epochs, record_at, records_at, workdir)
from benchmarks.sweeps.policy import (all_tune_trials, archive, diverged_at_full_budget,
                                      known_trials, plan, refine_trials, tune_trials,
                                      tuned_setting)
