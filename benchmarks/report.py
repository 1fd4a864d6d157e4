"""Tables and plots from the finished trials of `benchmarks.sweeps`.

    python -m benchmarks.report --experiment lenet300100_mnist
    python -m benchmarks.report --all    # every experiment, RESULTS.md and the README's table
    python -m benchmarks.report --check-readme  # exit 1 if the README's table is out of date

Writes benchmarks/results/sweeps/<experiment>.{json,md,png}: each method's tuned setting (chosen
on validation), its front (test error against compression, seed 0), and its reference point over
seeds 0-2 (mean ± std). Trials still running or waiting are listed as missing. First it archives
the finished trials' outcomes in <experiment>.trials.json, which is committed: a machine without
the workdirs under runs/ counts them as finished and does not run them again. `--all` also
rewrites the README's headline table (between its marker comments) from the summaries written to
benchmarks/results/sweeps/*.json, so that no figure there is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
from pathlib import Path
from typing import Any

from benchmarks import reading, sweeps
from benchmarks.comparison import (FAILED_FACTOR, against_published, error_at, judged_by, metric,
                                   versus)
from benchmarks.comparison import x as _x

RESULTS = sweeps.outcomes.ARCHIVE
README = Path(__file__).resolve().parent.parent / "README.md"
README_BEGIN = ("<!-- headline results: written by `python -m benchmarks.report --all` from "
                "benchmarks/results/sweeps/*.json; edits here are overwritten -->")
README_END = "<!-- end of headline results -->"


def weights_compression(record: dict[str, Any]) -> float | None:
  """Compression counted on weights only (kernels: total / non-zeros), as LOBSTER, Sparse VD,
  DNS and Han et al. count it; None for a record without per-layer counts (the earliest
  LeNet-300-100 trials)."""
  kernels = [stats for name, stats in record.get("layers", {}).items()
             if name.split("/")[-1] == "kernel"]
  if not kernels or any("nonzeros" not in k for k in kernels):
    return None
  nonzeros = sum(k["nonzeros"] for k in kernels)
  return math.inf if nonzeros == 0 else sum(k["total"] for k in kernels) / nonzeros


PERPLEXITY = ("val_perplexity", "test_perplexity")


def dead_groups(record: dict[str, Any]) -> dict[str, list[int]]:
  """{kind: [dead, all]} over a record's group sets, by the last part of their names
  ("blocks/0/heads" -> heads)."""
  out: dict[str, list[int]] = {}
  for name, counts in sorted(record["dead_groups"].items()):
    kind = name.rsplit("/", 1)[-1]
    dead, total = out.get(kind, (0, 0))
    out[kind] = [dead + counts["zero"], total + counts["groups"]]
  return out


def _row(experiment: sweeps.Experiment, trial: sweeps.Trial) -> dict[str, Any] | None:
  record = sweeps.final_record(experiment, trial)
  if record is None:
    return None
  if "diverged" in record:
    return {"trial": trial.id, "stage": trial.stage, "knob_value": trial.knob_value,
            "setting": trial.setting, "seed": trial.seed, "diverged": record["diverged"]}
  row = {"trial": trial.id, "stage": trial.stage, "knob_value": trial.knob_value,
         "setting": trial.setting, "seed": trial.seed,
         "command": shlex.join(sweeps.engine.train_command(experiment, trial)),
         "val_error": 100 * (1 - record["val_accuracy"]),
         "test_error": 100 * (1 - record["test_accuracy"]),
         "compression": record["compression"], "nonzeros": record["nonzeros"],
         "compression_weights": weights_compression(record)}
  row.update({k: record[k] for k in PERPLEXITY if k in record})  # a language model's
  if "dead_groups" in record:  # a Transformer's heads and neurons
    row["dead_groups"] = dead_groups(record)
  overrides = trial.overrides(experiment)
  retrain = overrides.get("freeze_zeros_epoch")
  before = None if retrain is None else sweeps.record_at(experiment, trial, retrain)
  if before is not None:  # where retraining (zeros frozen) began
    row["before_retraining"] = {"epoch": retrain,
                                "test_error": 100 * (1 - before["test_accuracy"]),
                                "compression": before["compression"]}
  if overrides.get("optimizer") == "affine_scaling":
    kept = sweeps.records_at(experiment, trial, sweeps.kept_epochs(experiment, trial))
    row["iterations"] = [_iteration(r) for r in kept if r["epoch"] < record["epoch"]] + [
        _iteration(record)]
    row["leafwise"] = bool(overrides.get("affine_leafwise"))
  return row


def _iteration(record: dict[str, Any]) -> dict[str, Any]:
  """One affine-scaling checkpoint: errors, compression and each kernel's kurtosis (records
  from before the loop logged kurtosis have none)."""
  return {"epoch": record["epoch"], "val_error": 100 * (1 - record["val_accuracy"]),
          "test_error": 100 * (1 - record["test_accuracy"]),
          "compression": record["compression"],
          "kurtosis": {name: stats["kurtosis"] for name, stats in record["layers"].items()
                       if "kurtosis" in stats}}


def summarize(experiment: sweeps.Experiment) -> dict[str, Any]:
  """Per method: tune rows, the chosen setting, front rows and the reference's seeds (from the
  workdirs, and from the archive for trials whose workdir is gone)."""
  methods, missing, diverged = {}, [], []
  apart = experiment.tuning is not None  # tuned at a shorter budget, in its own directory
  for method in experiment.methods:
    stage = sweeps.tuning_stage(experiment, method)[0]
    tuning = sweeps.all_tune_trials(experiment, method)
    tune = [_row(stage, t) for t in tuning]
    best = sweeps.tuned_setting(experiment, method)
    tried = sorted(t.setting for t in tuning)
    lender = next((m for m in experiment.methods if m.id == method.tuned_as), None)
    entry: dict[str, Any] = {"label": method.label, "knob": method.knob, "trend": method.trend,
                             "tuned": {"key": method.tune[0], "values": tried,
                                       "grid": list(method.tune[1]), "chosen": best,
                                       "as": lender and lender.label},
                             "note": method.note, "tune": [r for r in tune if r]}
    missing += [f"{stage.id}/{t.id}" if apart else t.id for t, r in zip(tuning, tune)
                if r is None]
    diverged += [f"{stage.id}/{r['trial']}" if apart else r["trial"] for r in tune
                 if r and "diverged" in r]
    if apart:  # settings passed over because their full-budget reference run diverged
      passed = [v for v in tried if sweeps.diverged_at_full_budget(experiment, method, v)]
      entry["tuned"]["diverged_at_full_budget"] = passed
      diverged += [sweeps.Trial(method, "front", method.reference, v, 0).id for v in passed]
    if best is not None:
      values = sorted({*method.front, method.reference}, key=method.front_order)
      # The stage that trained the reference at seed 0 (a borrower has no tune trials).
      first = "front" if apart or method.tuned_as else "tune"
      front = [sweeps.Trial(method, first if v == method.reference else "front", v, best, 0)
               for v in values]
      seeds = [sweeps.Trial(method, first, method.reference, best, 0)] + [
          sweeps.Trial(method, "seed", method.reference, best, s) for s in method.seeds
          if method.reference in sweeps.seeded_values(method)]
      front_rows = [_row(experiment, t) for t in front]
      seed_rows = [_row(experiment, t) for t in seeds]
      # (seeds[0], the reference at seed 0, is on the front too)
      missing += [t.id for t, r in zip(front + seeds[1:], front_rows + seed_rows[1:]) if r is None]
      diverged += [r["trial"] for r in front_rows + seed_rows[1:] if r and "diverged" in r]
      trained = lambda rows: [r for r in rows if r and "diverged" not in r]  # noqa: E731
      entry["front"] = sorted(trained(front_rows), key=lambda r: r["compression"])
      done = trained(seed_rows)
      entry["reference"] = {"knob_value": method.reference, **_stats(done)}
      entry["seed_rows"] = [r for r in done if r["seed"] != 0]  # (seed 0 is on the front)
      if method.seeded_at:  # seeds at every seeded value, the tuning seed apart
        entry["points"] = []
        for value in sweeps.seeded_values(method):
          trials = [sweeps.Trial(method, "seed", value, best, s) for s in method.seeds]
          rows = [_row(experiment, t) for t in trials]
          if value != method.reference:
            missing += [t.id for t, r in zip(trials, rows) if r is None]
            diverged += [r["trial"] for r in rows if r and "diverged" in r]
            entry["seed_rows"] += trained(rows)
          seed0 = next((r for r in entry["front"] if r["knob_value"] == value), None)
          point = {"knob_value": value, **_stats(trained(rows)),
                   "seed0_test_error": seed0 and seed0["test_error"]}
          if seed0 and "test_perplexity" in seed0:  # a language model's
            point["seed0_test_perplexity"] = seed0["test_perplexity"]
          entry["points"].append(point)
    methods[method.id] = entry
  return {"experiment": experiment.id, "label": experiment.label,
          "epochs": experiment.overrides["num_epochs"],
          "tune_epochs": (experiment.tuning or experiment).overrides["num_epochs"],
          "validation_split": experiment.overrides.get("validation_split"),
          **({"edge_trial": int(experiment.edge_trial)} if experiment.edge_trial else {}),
          "methods": methods,
          "published": [dict(zip(("method", "error", "compression", "source"), p))
                        for p in experiment.published],
          "missing": missing, "diverged": sorted(set(diverged))}


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """The seeds of ``rows`` and each figure's mean and std over them (None where a row lacks the
  figure, std None for one row)."""
  out: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
  extra = [k for k in PERPLEXITY if rows and all(k in r for r in rows)]
  for key in ("test_error", "val_error", "compression", "compression_weights", *extra):
    values = [r[key] for r in rows]
    if any(v is None for v in values):
      values = []
    out[f"{key}_mean"] = statistics.fmean(values) if values else None
    out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
  return out


def equal_sparsity(summary: dict[str, Any]) -> list[str]:
  """Per target: every method trained to it, the seeded ones as mean ± std over their seeds
  (not the tuning seed), the others at seed 0; then the first seeded method against each other
  seeded one."""
  seeded = {key: e for key, e in summary["methods"].items() if e.get("points")}
  if not seeded:
    return []
  first = next(iter(seeded))
  values = sorted({p["knob_value"] for e in seeded.values() for p in e["points"]})
  test, _, places = judged_by(summary)
  text = test == "test_perplexity"
  val = "val_perplexity" if text else "val_error"
  lines = ["", "## At equal sparsity", "",
           "Every method trained to the same fraction of zero weights (kernel sparsity, the knob "
           "below; compression on weights = 1 / (1 − sparsity)). Seeded methods: mean ± std over "
           "the seeds listed, which exclude the tuning seed 0 (its figure beside them); the others "
           "at seed 0. A difference is called a gap only when it exceeds the spread, the sum of "
           "the two stds.", "",
           ("| sparsity | method | seeds | test perplexity | (seed 0) | val perplexity "
            if text else "| sparsity | method | seeds | test error % | (seed 0) | val error % ")
           + "| compression × | compression × (weights) |", "|---|---|---|---|---|---|---|---|"]
  verdicts = []
  for value in values:
    for key, entry in summary["methods"].items():
      point = next((p for p in entry.get("points", []) if p["knob_value"] == value), None)
      if point is not None and point["seeds"]:
        seed0 = point.get(f"seed0_{test}")
        lines.append(
            f"| {value} | {entry['label']} | {', '.join(map(str, point['seeds']))} | "
            f"{_pm(point.get(f'{test}_mean'), point.get(f'{test}_std'), places)} | "
            f"{'–' if seed0 is None else f'{seed0:.{places}f}'} | "
            f"{_pm(point.get(f'{val}_mean'), point.get(f'{val}_std'), places)} | "
            f"{_pm(point['compression_mean'], None, 1)} | "
            f"{_pm(point['compression_weights_mean'], None, 1)} |")
        continue
      row = next((r for r in entry.get("front", []) if r["knob_value"] == value), None)
      if row is not None and entry["knob"] is not None:  # (a seeded point without seeds yet too)
        weights = row.get("compression_weights")
        lines.append(f"| {value} | {entry['label']} | 0 | {row[test]:.{places}f} | | "
                     f"{row[val]:.{places}f} | {_x(row['compression'])} | "
                     f"{'–' if weights is None else _x(weights)} |")
  by = metric(seeded)
  unit = "%" if by == "test_error" else " test perplexity"
  found = {(value, key): rest for key in list(seeded)[1:]
           for value, *rest in versus(seeded, first, key, by)}
  for value in values:  # per target, then per method: the table's order
    for key in [k for k in seeded if (value, k) in found]:
      a, b, (gap, spread, word) = found[value, key]
      verdicts.append(f"- {value}: {seeded[first]['label']} against {seeded[key]['label']}: "
                      f"{_pm(a[f'{by}_mean'], a[f'{by}_std'])}{unit} against "
                      f"{_pm(b[f'{by}_mean'], b[f'{by}_std'])}{unit} "
                      f"(difference {gap:+.2f}, spread {spread:.2f}): {word}")
  return lines + ([""] + verdicts if verdicts else [])


def _pm(mean, std, digits=2) -> str:
  if mean is None:
    return "–"
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _edge(tuned: dict[str, Any]) -> str:
  """Says when the choice is the smallest or largest value tried: the best may lie beyond."""
  values, chosen, key = tuned["values"], tuned["chosen"], tuned["key"]
  passed = "".join(f"; {v} diverged at the full budget"
                   for v in tuned.get("diverged_at_full_budget", []))
  if chosen is None or len(values) < 2:
    return passed
  if isinstance(key, (list, tuple)):  # several knobs: the edge of each knob's values tried
    edges = [k for i, k in enumerate(key)
             if len({v[i] for v in values}) > 1 and chosen[i] in (
                 min(v[i] for v in values), max(v[i] for v in values))]
    return passed + "".join(f"; {k} on the edge" for k in edges)
  return passed + ("; on the edge" if chosen in (min(values), max(values)) else "")


def _tuned(tuned: dict[str, Any]) -> str:
  """The tuned setting's cell: "learning_rate = 0.1 (of [...])", several knobs named together,
  or the method whose setting an ablation borrows."""
  key, chosen = tuned["key"], tuned["chosen"]
  if tuned.get("as"):
    return f"as {tuned['as']}" + ("" if chosen is None else f": {_setting(key, chosen)}")
  values = ", ".join(_value(v) for v in tuned["values"])
  if chosen is None:  # its tuning has not finished (or begun)
    return f"{_setting(key, '–')} (of [{values}], not chosen yet)"
  return f"{_setting(key, chosen)} (of [{values}]{_edge(tuned)})"


def _value(value: Any) -> str:
  return f"({', '.join(map(str, value))})" if isinstance(value, (list, tuple)) else str(value)


def _setting(key: Any, value: Any) -> str:
  if isinstance(key, (list, tuple)):
    return f"({', '.join(key)}) = {_value(value)}"
  return f"{key} = {value}"


def _tuned_at(summary: dict[str, Any]) -> str:
  tune, epochs = summary.get("tune_epochs", summary["epochs"]), summary["epochs"]
  if tune == epochs:
    return ""
  return (f"; each tune trial trained {tune} epochs, not {epochs} (a successive-halving stage, "
          f"the same for every method), and the chosen setting then trained the full {epochs}")


def _edge_trial(summary: dict[str, Any]) -> str:
  rounds = int(summary.get("edge_trial", 0))
  if not rounds:
    return ""
  if rounds == 1:
    return ("; and where the best of those still lay on an edge of the values tried, one more a "
            "step beyond it")
  return ("; and while the best of those still lay on an edge of the values tried, one more a "
          f"step beyond it, up to {rounds}")


def markdown(summary: dict[str, Any]) -> str:
  key, column, places = judged_by(summary)
  lines = [f"# {summary['label']}, {summary['epochs']} epochs", "",
           "Each method's setting was chosen on the validation split "
           f"(`{summary.get('validation_split')}`) "
           + ("by the same rule" if summary.get("edge_trial") else "from the same number of trials")
           + ": its grid, "
           "then one more trial a step beyond the grid's edge if the best was on it, else "
           "between the best and its better neighbour" + _edge_trial(summary)
           + _tuned_at(summary) + f". The {column.removesuffix(' %')} "
           "is reported, never used to choose. Compression is counted both ways: over all "
           "parameters (all / non-zeros) and over weights only (conv and linear kernels, as "
           "the published points count it; biases and batch-norm terms left out).", "",
           "## Reference points (mean ± std over the seeds listed)", "",
           f"| method | knob | tuned | seeds | {column} | compression × | "
           "compression × (weights) |",
           "|---|---|---|---|---|---|---|"]
  for entry in summary["methods"].values():
    ref = entry.get("reference") or {}
    tuned = entry["tuned"]
    seeds = ", ".join(map(str, ref.get("seeds", []))) or "–"
    knob = f"{entry['knob']} = {ref.get('knob_value', '–')}" if entry["knob"] else "–"
    lines.append(
        f"| {entry['label']} | {knob} | "
        f"{_tuned(tuned)} | {seeds} | "
        f"{_pm(ref.get(f'{key}_mean'), ref.get(f'{key}_std'), places)} | "
        f"{_pm(ref.get('compression_mean'), ref.get('compression_std'), 1)} | "
        f"{_pm(ref.get('compression_weights_mean'), ref.get('compression_weights_std'), 1)} |")
  lines += ["", "## Fronts (seed 0)", "",
            f"| method | knob | compression × | compression × (weights) | {column} |",
            "|---|---|---|---|---|"]
  for entry in summary["methods"].values():
    for r in entry.get("front", []):
      weights = r.get("compression_weights")
      lines.append(f"| {entry['label']} | {r['knob_value']} | {_x(r['compression'])} | "
                   f"{'–' if weights is None else _x(weights)} | {r[key]:.{places}f} |")
  commands = [(e, r) for e in summary["methods"].values()
              for r in e.get("front", []) + e.get("seed_rows", []) if "command" in r]
  if commands:  # each row's own training (the sweep runs them all)
    lines += ["", "<details><summary>The training command of each row</summary>", ""]
    for entry, r in commands:
      knob = f"{entry['knob']} = {r['knob_value']}, " if entry["knob"] else ""
      lines.append(f"- {entry['label']}, {knob}seed {r['seed']}: `{r['command']}`")
    lines += ["", "</details>"]
  retrained = [(e["label"], r) for e in summary["methods"].values() for r in e.get("front", [])
               if "before_retraining" in r]
  if retrained:
    lines += ["", "## Before and after retraining with zeros frozen (seed 0)", "",
              "| method | knob | before: compression × | test error % | after: compression × "
              "| test error % |", "|---|---|---|---|---|---|"]
    for label, r in retrained:
      b = r["before_retraining"]
      lines.append(f"| {label} | {r['knob_value']} | {_x(b['compression'])} | "
                   f"{b['test_error']:.2f} | {_x(r['compression'])} | {r['test_error']:.2f} |")
  lines += equal_sparsity(summary)
  lines += _transformer_table(summary)
  lines += _iterations_table(summary)
  sparse = [p for p in summary["published"] if p["compression"] > 1]
  fronts = [(e["label"], e["front"]) for e in summary["methods"].values()
            if len(e.get("front", [])) > 1]
  if sparse and fronts:
    lines += ["", "## Against the published points", "",
              "Each front's test error at the published compression, counted as the papers "
              "count it, on weights only (linear in log compression between its neighbouring "
              "points; – outside the front, or next to a point that failed: over "
              f"{FAILED_FACTOR:g}× the front's best error), and its gap to the published error "
              "(negative: better).", "",
              "| method | " + " | ".join(f"{p['method']} {p['compression']:g}× @{p['error']}%"
                                        for p in sparse) + " |",
              "|---|" + "---|" * len(sparse)]
    for label, front in fronts:
      cells = []
      for p in sparse:
        e = error_at(front, p["compression"], "compression_weights")
        cells.append("–" if e is None else f"{e:.2f} ({e - p['error']:+.2f})")
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines += _seeded_at_published(summary)
  if summary["published"]:
    lines += ["", "## Published (compression on weights only)", "",
              "| method | error % | compression × | source |", "|---|---|---|---|"]
    lines += [f"| {p['method']} | {p['error']} | {p['compression']} | {p['source']} |"
              for p in summary["published"]]
  if summary["diverged"]:
    lines += ["", f"Diverged ({len(summary['diverged'])}): "
              + ", ".join(f"`{m}`" for m in summary["diverged"])]
  if summary["missing"]:
    lines += ["", f"Not finished yet ({len(summary['missing'])}): "
              + ", ".join(f"`{m}`" for m in summary["missing"])]
  notes = [f"- {e['label']}: {e['note']}" for e in summary["methods"].values() if e["note"]]
  if notes:
    lines += ["", "Notes:", *notes]
  return "\n".join(lines) + "\n"


def _seeded_at_published(summary: dict[str, Any]) -> list[str]:
  """The seeded methods at the targets that are published points' compressions (on weights,
  as the papers count them): mean ± std against the published error."""
  rows = against_published(summary["methods"], summary["published"])
  if not rows:
    return []
  lines = ["", "## Seeded at the published points", "",
           "Where a target is a published point's compression on weights: each seeded method's "
           "test error (mean ± std over the seeds listed) against the published error, which "
           "has no spread, so a difference is called a gap only beyond the seeds' std.", "",
           "| published | source | method | seeds | test error % | difference | verdict |",
           "|---|---|---|---|---|---|---|"]
  for pub, key, point, (gap, _, word) in rows:
    lines.append(f"| {pub['method']} {pub['compression']:g}× @{pub['error']}% | {pub['source']} "
                 f"| {summary['methods'][key]['label']} | "
                 f"{', '.join(map(str, point['seeds']))} | "
                 f"{_pm(point['test_error_mean'], point['test_error_std'])} | {gap:+.2f} | "
                 f"{word} |")
  return lines


def _transformer_table(summary: dict[str, Any]) -> list[str]:
  """A language model's perplexity per byte and a Transformer's dead attention heads and MLP
  neurons, at every front point (seed 0; the seeds' mean ± std beside it where seeded)."""
  rows = [(e, r) for e in summary["methods"].values() for r in e.get("front", [])
          if "val_perplexity" in r or "dead_groups" in r]
  if not rows:
    return []
  kinds = sorted({k for _, r in rows for k in r.get("dead_groups", {})})
  text = any("val_perplexity" in r for _, r in rows)
  lines = ["", "## Perplexity and dead groups" if text else "## Dead groups", "",
           "At each front point, seed 0" + (" (validation perplexity over the seeds, where "
                                             "seeded, beside it)" if text else "")
           + "; a group counts as dead when all its weights are zero: a lower bound on what "
           "export removes (also a head whose value or output slice alone is zero, a neuron "
           "whose input column or output row alone is).", "",
           "| method | knob | compression × (weights) |"
           + (" val perplexity | (seeds) | test perplexity |" if text else "")
           + "".join(f" dead {k} |" for k in kinds),
           "|---|---|---|" + ("---|---|---|" if text else "") + "---|" * len(kinds)]
  for entry, r in rows:
    weights = r.get("compression_weights")
    cells = [entry["label"], str(r["knob_value"]), "–" if weights is None else _x(weights)]
    if text:
      point = next((p for p in entry.get("points", []) if p["knob_value"] == r["knob_value"]
                    and p.get("val_perplexity_std") is not None), None)
      cells += [f"{r['val_perplexity']:.3f}" if "val_perplexity" in r else "–",
                "–" if point is None else
                f"{_pm(point['val_perplexity_mean'], point['val_perplexity_std'], 3)} "
                f"({', '.join(map(str, point['seeds']))})",
                f"{r['test_perplexity']:.3f}" if "test_perplexity" in r else "–"]
    dead = r.get("dead_groups", {})
    cells += [f"{dead[k][0]} / {dead[k][1]}" if k in dead else "–" for k in kinds]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _iterations_table(summary: dict[str, Any]) -> list[str]:
  """Affine scaling's validation error and kernel kurtosis at the end of each re-weighting
  iteration, then after pruning and retraining: Fedorov & Rao's (2018) Fig. 1 (kurtosis rises
  while the validation error stays nearly unchanged)."""
  rows = [(e["label"], r) for e in summary["methods"].values() for r in e.get("front", [])
          if r.get("iterations")]
  if not rows:
    return []
  lines = ["", "## Affine scaling over its re-weighting iterations (seed 0)", "",
           "Kurtosis E[((W − mean) / std)⁴] of each kernel (3 for a Gaussian; higher as weights "
           "gather at zero with heavy tails), at the end of each iteration; the last row is after "
           "pruning and retraining. Fedorov & Rao's (2018) Fig. 1: kurtosis rises with the "
           "iterations while the validation error stays nearly unchanged."]
  for label, r in rows:
    kernels = list(next((i["kurtosis"] for i in r["iterations"] if i["kurtosis"]), {}))
    lines += ["", f"{label}, {r['knob_value']}:", "",
              "| epoch | refreshed | val error % | test error % | compression × |"
              + "".join(f" kurtosis {k} |" for k in kernels),
              "|---|---|---|---|---|" + "---|" * len(kernels)]
    for t, it in enumerate(r["iterations"]):
      last = t == len(r["iterations"]) - 1
      refreshed = ("pruned, retrained" if last else "all" if not r["leafwise"] else
                   kernels[t % len(kernels)] if kernels else "one layer")
      cells = [f" {it['kurtosis'][k]:.1f} |" if k in it["kurtosis"] else " – |" for k in kernels]
      lines.append(f"| {it['epoch']} | {refreshed} | {it['val_error']:.2f} | "
                   f"{it['test_error']:.2f} | {_x(it['compression'])} |" + "".join(cells))
  return lines


def _style(i: int) -> dict[str, Any]:
  """The i-th method's colour, marker and line: ten colours, then the next marker and dash, so
  that no two methods of an experiment look alike."""
  return dict(color=f"C{i % 10}", marker="oDvP"[i // 10 % 4], ls=("-", "--", "-.", ":")[i // 10 % 4])


def plot(summary: dict[str, Any], path: Path) -> tuple[float, float]:
  """Writes the fronts' plot to ``path``, and beside it, where methods were seeded at equal
  targets, their mean ± std there; returns the error axis' limits. A language model's axis is
  its test perplexity per byte (its records' error is next-byte error, not what it is judged
  by)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  seeded = {i: [p for p in entry.get("points", []) if p["seeds"]
                and p.get("compression_weights_mean") is not None]
            for i, entry in enumerate(summary["methods"].values())}
  seeded = {i: points for i, points in seeded.items() if points}
  if seeded:
    fig, (ax, equal) = plt.subplots(1, 2, figsize=(14, 4.8), sharey=True,
                                    gridspec_kw=dict(width_ratios=(3, 2)))
  else:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    equal = None
  panels = (ax,) if equal is None else (ax, equal)
  y = judged_by(summary)[0]
  text = y == "test_perplexity"
  unit = "" if text else "%"
  plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 1.5, not 1.5×10^0
  errors = []
  # On weights only, as the published points count it; a front without per-layer counts (the
  # earliest trials) on all parameters, said in its label.
  counted = {}
  for i, entry in enumerate(summary["methods"].values()):
    front = entry.get("front", [])
    on_weights = bool(front) and all(r.get("compression_weights") is not None for r in front)
    key = counted[i] = "compression_weights" if on_weights else "compression"
    errors += [r[y] for r in front]
    if front and entry["knob"] is None:  # dense: the level to beat, across the plot
      for axis in panels:
        axis.axhline(front[0][y], ls="--", lw=1, color=_style(i)["color"],
                     label=None if axis is equal else f"{entry['label']} (1×)")
    elif front:
      ax.plot([r[key] for r in front], [r[y] for r in front], **_style(i),
              label=entry["label"] + ("" if on_weights else " (all parameters)"))
      for r in front if entry.get("trend") else ():
        ax.annotate(f"{entry['knob']} {r['knob_value']:g}", (r[key], r[y]),
                    fontsize=7, color=_style(i)["color"], xytext=(4, -10),
                    textcoords="offset points")
    if i in seeded:  # the seeds' mean ± std at each target, joined target to target
      points = seeded[i]
      style = _style(i)
      equal.errorbar([p["compression_weights_mean"] for p in points],
                     [p[f"{y}_mean"] for p in points],
                     yerr=[p[f"{y}_std"] or 0.0 for p in points], capsize=3,
                     color=style["color"], ls=style["ls"], marker="s", mfc="none",
                     label=None if front else f"{entry['label']}, seeded")
      errors += [p[f"{y}_mean"] for p in points]
  # Published points: numbered stars, the names in the legend (long labels beside the stars
  # overlapped wherever two points are close).
  for i, p in enumerate(summary["published"], start=1):
    for axis in panels:
      axis.scatter(p["compression"], p["error"], marker="*", s=110, color="black", zorder=3,
                   label=None if axis is equal else
                   f"{i}: {p['method']}, {p['error']}% @ {p['compression']:g}× ({p['source']})")
      axis.annotate(str(i), (p["compression"], p["error"]), fontsize=8, fontweight="bold",
                    xytext=(5, 4), textcoords="offset points")
  ax.set_xscale("log")
  errors += [p["error"] for p in summary["published"]]
  # A point that failed (e.g. 69% error) would squash every other into the bottom of the plot:
  # then the axis stops at 4× the median error, and such points are marked at its top.
  ceiling = 4 * statistics.median(errors) if errors else math.inf
  if not any(e > ceiling for e in errors):
    ceiling = math.inf
  above = sorted((r[counted[i]], r[y], i)
                 for i, entry in enumerate(summary["methods"].values())
                 for r in entry.get("front", []) if r[y] > ceiling)
  row, previous = 0, None
  for compression, error, i in above:
    # Points within a third of each other on the log axis get their labels stacked, not overlaid.
    row = row + 1 if previous is not None and compression < 1.35 * previous else 0
    previous = compression
    ax.scatter(compression, ceiling, marker="^", s=60, color=_style(i)["color"], clip_on=False,
               zorder=4)
    ax.annotate(f"{error:.2f}{unit}", (compression, ceiling), fontsize=7, color=_style(i)["color"],
                xytext=(-4, -12 - 9 * row), textcoords="offset points", ha="right")
  errors = [e for e in errors if e <= ceiling]
  steep = bool(errors) and min(errors) > 0 and max(errors) > 3 * min(errors)
  if ceiling < math.inf:
    low = min(errors) if errors else 0
    ax.set_ylim(low / 1.15 if steep else max(0, low - 0.1 * (ceiling - low)), ceiling)
  if steep:  # a front that climbs steeply at high compression: keep the low-error end legible
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_yticks([v for v in (0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 7, 10, 15, 20, 30, 50, 70)
                   if low <= v <= high])
    ax.yaxis.set_major_formatter(plain)
  low, high = ax.get_xlim()
  if high < 10 * low:  # under a decade the log ticks read "1.04×10^0": plain numbers instead
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
  ax.set_xlabel("compression on weights only (the tables: over all parameters too), log scale")
  ax.set_ylabel(("test perplexity per byte" if text else "test error %") + (", log scale" if steep else ""))
  ax.set_title(f"{summary['label']}, {summary['epochs']} epochs" + (
      ": fronts, seed 0" if equal is not None else ""))
  ax.grid(True, which="both", alpha=0.3)
  legend_axis = ax
  if equal is not None:
    equal.set_xscale("log")  # ticks at the targets, the panel spanning them alone
    targets = sorted({round(c) if (c := p["compression_weights_mean"]) >= 10 else round(c, 1)
                      for points in seeded.values() for p in points})
    equal.set_xlim(targets[0] / 1.4, targets[-1] * 1.4)
    equal.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(targets))
    equal.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    equal.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    seeds = sorted({s for points in seeded.values() for p in points for s in p["seeds"]})
    equal.set_title(f"at equal sparsity: mean ± std over seeds {', '.join(map(str, seeds))}")
    equal.set_xlabel("compression on weights only, log scale")
    equal.grid(True, which="both", alpha=0.3)
    legend_axis = equal
  handles, labels = ax.get_legend_handles_labels()
  if equal is not None:
    more = equal.get_legend_handles_labels()
    handles, labels = handles + more[0], labels + more[1]
  legend_axis.legend(handles, labels, fontsize=6.5, loc="upper left",
                     bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  limits = ax.get_ylim()
  plt.close(fig)
  return limits


def write(experiment: sweeps.Experiment) -> dict[str, Any]:
  """The experiment's summary, written as RESULTS/<id>.{json,md,png}."""
  sweeps.archive(experiment)
  summary = summarize(experiment)
  RESULTS.mkdir(parents=True, exist_ok=True)
  base = RESULTS / experiment.id
  base.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
  base.with_suffix(".md").write_text(markdown(summary))
  plot(summary, base.with_suffix(".png"))
  return summary


def started(summary: dict[str, Any]) -> bool:
  return any(entry["tune"] for entry in summary["methods"].values())


def index(summaries: list[dict[str, Any]]) -> str:
  """benchmarks/results/RESULTS.md: every experiment's tables and plot, with its commands."""
  lines = ["# Results at the papers' budgets", "",
           "Written by `python -m benchmarks.report --all` from the trials of "
           "`python -m benchmarks.sweeps` finished so far (the sweeps resume: rerun the same "
           "command). Each method is tuned on the validation split with the same number of "
           "trials; the test error is reported, never used to choose. Compression = all "
           "parameters (biases included) / non-zeros. Published rows are copied from the papers, "
           "not rerun. The earlier comparison at 4–30 epochs, which these budgets "
           "replace, is `benchmarks/results/short_budgets.md` in git history (commit 6b829fd).",
           ""]
  for summary in summaries:
    lines += [f"## {summary['label']}, {summary['epochs']} epochs", "",
              f"Reproduce: `python -m benchmarks.sweeps --experiment {summary['experiment']}`, "
              "then `python -m benchmarks.report --all`.", ""]
    if not started(summary):
      methods = ", ".join(e["label"] for e in summary["methods"].values())
      lines += [f"Queued, no trial finished yet ({methods}).", ""]
      continue
    body = markdown(summary).splitlines()
    lines += ["#" + line if line.startswith("## ") else line for line in body[1:]]
    lines += ["", f"![{summary['experiment']}](sweeps/{summary['experiment']}.png)", ""]
  return "\n".join(lines) + "\n"


def archived_summaries() -> list[dict[str, Any]]:
  """The summaries written to RESULTS/<experiment>.json, in the catalogue's order."""
  paths = [RESULTS / f"{name}.json" for name in sweeps.EXPERIMENTS]
  return [json.loads(path.read_text()) for path in paths if path.exists()]


def _error(ref: dict[str, Any]) -> str:
  return _pm(ref["test_error_mean"], ref["test_error_std"]) + "%"


def headline(summaries: list[dict[str, Any]]) -> str:
  """The README's table: for each experiment with xrda and dense SGD, their reference points and
  the other sparse method with the lowest reference test error, each at its own compression,
  counted over all parameters and over weights alone."""
  lines = ["| experiment | budget | dense SGD | xRDA (log-l1) | strongest other sparse method |",
           "|---|---|---|---|---|"]
  for summary in summaries:
    methods = summary["methods"]
    refs = {key: (entry.get("reference") or {}) for key, entry in methods.items()}
    done = {key: ref for key, ref in refs.items() if ref.get("test_error_mean") is not None}
    dense = [key for key in done if methods[key]["knob"] is None]
    if "xrda" not in done or not dense:
      continue
    # (xrda's own variants, the target-driven one and the ablations, are not "other methods")
    others = [key for key in done if not key.startswith("xrda") and methods[key]["knob"]]
    best = min(others, key=lambda key: done[key]["test_error_mean"], default=None)

    def at(key):
      weights = done[key].get("compression_weights_mean")
      return (f"{_error(done[key])} at {_x(done[key]['compression_mean'])}×"
              + ("" if weights is None else f" ({_x(weights)}× on weights)"))
    other = "–" if best is None else f"{methods[best]['label']}: {at(best)}"
    lines.append(f"| [{summary['label']}](benchmarks/results/sweeps/{summary['experiment']}.md) "
                 f"| {summary['epochs']} epochs | {_error(done[dense[0]])} | {at('xrda')} "
                 f"| {other} |")
  return "\n".join(lines) + "\n" + equal_headline(summaries)


def equal_headline(summaries: list[dict[str, Any]]) -> str:
  """The README's equal-sparsity lines: at each target where xrda through the sparsity target
  and another seeded method both have two seeds or more, their test errors and the verdict
  (empty where there is none yet)."""
  lines = []
  for summary in summaries:
    seeded = {key: e for key, e in summary["methods"].items() if e.get("points")}
    if "xrda_target" not in seeded or metric(seeded) != "test_error":
      continue  # (a language model's verdicts, on perplexity, are in its own table)
    for key, entry in seeded.items():
      if key.startswith("xrda"):
        continue
      for _, a, b, (gap, spread, word) in versus(seeded, "xrda_target", key):
        lines.append(
            f"| [{summary['label']}](benchmarks/results/sweeps/{summary['experiment']}.md"
            f"#at-equal-sparsity) | {_x(a['compression_weights_mean'])}× | "
            f"{', '.join(map(str, a['seeds']))} / {', '.join(map(str, b['seeds']))} | "
            f"{_error(a)} | {entry['label']}: {_error(b)} "
            f"| {word if word == 'within the spread' else 'xRDA ' + word} ({gap:+.2f}, "
            f"spread {spread:.2f}) |")
  if not lines:
    return ""
  return "\n".join([
      "", "At equal sparsity: every method trained to the same fraction of zero weights, xRDA "
      "through its sparsity target; test error over seeds other than the tuning seed, and a "
      "difference called a gap only beyond the spread (the sum of the two stds):", "",
      "| experiment | compression on weights | seeds (xRDA / other) | "
      "xRDA (log-l1), sparsity target | "
      "the other method | verdict |", "|---|---|---|---|---|---|", *lines]) + "\n"


def readme_with(text: str, table: str) -> str:
  """``text`` (the README) with ``table`` between its marker comments."""
  begin, end = text.find(README_BEGIN), text.find(README_END)
  if begin < 0 or end < begin:
    raise ValueError(f"{README.name} has no headline block: put {README_BEGIN!r} and "
                     f"{README_END!r} on lines of their own where the table goes.")
  return text[:begin + len(README_BEGIN)] + "\n" + table + text[end:]


def write_readme() -> bool:
  """Rewrites the README's table from the archived summaries; True if it changed."""
  text = README.read_text()
  updated = readme_with(text, headline(archived_summaries()))
  if updated != text:
    README.write_text(updated)
  return updated != text


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--experiment", choices=sorted(sweeps.EXPERIMENTS))
  which.add_argument("--all", action="store_true",
                     help="every experiment, benchmarks/results/RESULTS.md and the README's table")
  which.add_argument("--check-readme", action="store_true",
                     help="exit 1 if the README's table differs from what --all would write")
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--storage", default=None,
                      help="the sweep's storage URL: archive the outcomes that workers on other "
                      "machines published there too")
  args = parser.parse_args(argv)
  if args.check_readme:
    text = README.read_text()
    if readme_with(text, headline(archived_summaries())) != text:
      raise SystemExit(f"{README.name}'s headline table is out of date: run "
                       "python -m benchmarks.report --all")
    return
  if args.storage:
    print(f"{sweeps.engine.pull(args.storage)} outcomes read from {args.storage}")
  if args.all:
    summaries = [summarize(build()) for build in sweeps.EXPERIMENTS.values()]
    summaries = [write(sweeps.EXPERIMENTS[s["experiment"]]()) if started(s) else s
                 for s in summaries]
    (RESULTS.parent / "RESULTS.md").write_text(index(summaries))
    print(f"wrote {RESULTS.parent / 'RESULTS.md'}")
    if write_readme():
      print(f"wrote {README.name}'s headline table")
    if reading.write():
      print(f"wrote {reading.OUTPUT.relative_to(reading.REPO)}")
    return
  build = sweeps.EXPERIMENTS[args.experiment]
  print(markdown(write(build() if args.epochs is None else build(args.epochs))))


if __name__ == "__main__":
  main()
