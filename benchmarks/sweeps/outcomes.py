"""What each trial has given: its workdir's records, the outcomes shared through the sweep's
storage by other workers, and the committed archive, read in that order."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.sweeps.catalogue import Experiment, Trial
from train import locks, run_folder

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "runs" / "sweeps"


def workdir(experiment: Experiment, trial: Trial) -> Path:
  return RUNS / experiment.id / trial.id


def _local_records(experiment: Experiment, trial: Trial) -> list[dict]:
  return run_folder.records(workdir(experiment, trial))


def last_record(experiment: Experiment, trial: Trial) -> dict | None:
  """The workdir's last complete record."""
  return run_folder.last_record(workdir(experiment, trial))


def records_at(experiment: Experiment, trial: Trial, epochs: list[int]) -> list[dict]:
  """The trial's records of ``epochs`` that it has got to, in one read; from the storage's or the
  archive's entry when the workdir has not finished the trial but one of them has."""
  entry = None if _local_final(experiment, trial) else stored_entry(experiment, trial)
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
  its training diverged (an outcome too: it is not run again), else None. A trial trained
  elsewhere counts by the outcome its worker shared (``SHARED``), one whose workdir is gone by
  its archived outcome."""
  record = _local_final(experiment, trial)
  if record is None:
    entry = stored_entry(experiment, trial)
    if entry is not None:
      record = {"diverged": entry["diverged"]} if "diverged" in entry else entry["records"][-1]
  return record


def finished(experiment: Experiment, trial: Trial) -> bool:
  return final_record(experiment, trial) is not None


# Outcomes that workers, on this machine or others, published to the sweep's storage:
# key(experiment, trial) -> entry as archived. The engine refreshes it from the storage.
SHARED: dict[str, dict] = {}


def key(experiment: Experiment, trial: Trial) -> str:
  """A trial's name across a sweep: "<experiment id>/<trial id>" (an Optuna study is named by
  the experiment's id, and its trials carry the trial's id)."""
  return f"{experiment.id}/{trial.id}"


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


def _valid(experiment: Experiment, trial: Trial, candidate: dict | None) -> dict | None:
  """``candidate`` if it was trained as the experiment now defines the trial (an experiment changed
  since, e.g. its epochs, does not take old outcomes for new ones) and finished."""
  if candidate is None or {k: candidate.get(k) for k in ("config", "overrides")} != _definition(
      experiment, trial):
    return None
  last = None if "diverged" in candidate else candidate["records"][-1]["epoch"]
  if last is not None and last < experiment.overrides["num_epochs"]:
    return None
  return candidate


def stored_entry(experiment: Experiment, trial: Trial) -> dict | None:
  """The trial's outcome as a worker shared it, else as archived (None: neither has it)."""
  return (_shared(experiment, trial)
          or _valid(experiment, trial, archived(experiment).get(trial.id)))


def _shared(experiment: Experiment, trial: Trial) -> dict | None:
  return _valid(experiment, trial, SHARED.get(key(experiment, trial)))


def _commit(directory: Path) -> str | None:
  commit = directory / "commit.txt"
  return commit.read_text().strip() if commit.exists() else None


def entry(experiment: Experiment, trial: Trial) -> dict | None:
  """The outcome of the trial's workdir as the archive keeps it: its definition, the commit that
  started it, and its final record (with the records of ``kept_epochs``) or its divergence;
  None while unfinished."""
  record = _local_final(experiment, trial)
  if record is None:
    return None
  out: dict[str, Any] = {**_definition(experiment, trial),
                         "commit": _commit(workdir(experiment, trial))}
  if "diverged" in record:
    out["diverged"] = record["diverged"]
  else:
    kept = records_at(experiment, trial, kept_epochs(experiment, trial))
    out["records"] = [r for r in kept if r["epoch"] < record["epoch"]] + [record]
  return out


def archive(experiment: Experiment, trials: list[Trial]) -> int:
  """Copies the outcome of each of ``trials`` that finished, in its workdir or under another
  worker (``SHARED``), into the archive. Returns how many entries changed."""
  path = archive_path(experiment)
  path.parent.mkdir(parents=True, exist_ok=True)
  with locks.exclusive(path.with_name(f".{path.name}.lock")):  # the runner and a report at once
    entries = dict(archived(experiment))
    changed = 0
    for trial in trials:
      new = entry(experiment, trial) or _shared(experiment, trial)
      if new is not None and entries.get(trial.id) != new:
        changed += 1
        entries[trial.id] = new
    if changed:
      temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
      temporary.write_text(json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
      temporary.replace(path)
  return changed


def diverged(directory: Path) -> bool:
  """Records the loop's divergence message, if that is why the trial stopped."""
  log = directory / "log.txt"
  lines = log.read_text().splitlines() if log.exists() else []
  message = next((l for l in reversed(lines) if "Training diverged" in l), None)
  if message is not None:
    (directory / DIVERGED).write_text(message[message.index("Training diverged"):] + "\n")
  return message is not None
