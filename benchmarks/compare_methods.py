"""Every method on equal footing: same model, data, validation split and epochs.

    python -m benchmarks.compare_methods --experiment lenet300100_mnist [--methods "dense SGD;LOBSTER"]
    python -m benchmarks.compare_methods --report      # short_budgets.md and plots from results/*.json

Each method trains with `train.train_and_evaluate` in runs/compare/<experiment>/<method> (a rerun
resumes or, when finished, only evaluates). The validation split (the last 6000 MNIST or 5000
CIFAR-10 training images) is held out of training for every method; LOBSTER prunes on it, and
the test set is used only for the reported numbers. The pruning baselines (Han, Zhu & Gupta,
affine scaling + pruning) prune the conv/linear weights to the sparsity xrda reached, so that
they are compared at the same sparsity (that of the experiment's reference xrda run, which must
have finished first; `python -m benchmarks.compare_methods --search NAME` runs the extra
settings of SEARCH, selected on validation). Results go to benchmarks/results/<experiment>.json; several runs of different methods may write
it at once (each merges its rows into the file as it is when it writes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from benchmarks.common import machine

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Published numbers of SPEC §5: (error %, compression ×, source).
PUBLISHED = {
    "lenet300100_mnist": [
        ("dense", 1.64, 1.0, "LOBSTER paper, table 2"),
        ("Han pruning", 1.59, 12.0, "LOBSTER paper, table 2"),
        ("Sparse VD", 1.92, 68.0, "LOBSTER paper, table 2"),
        ("LOBSTER", 1.65, 50.0, "LOBSTER paper, table 2"),
        ("LOBSTER", 1.95, 115.0, "LOBSTER paper, table 2"),
    ],
    "lenet5_mnist": [
        ("dense", 0.80, 1.0, "LOBSTER paper, table 3"),
        ("Han pruning", 0.77, 12.0, "LOBSTER paper, table 3"),
        ("Sparse VD", 0.75, 280.0, "LOBSTER paper, table 3"),
        ("DNS", 0.91, 111.0, "LOBSTER paper, table 3"),
        ("LOBSTER", 0.79, 230.0, "LOBSTER paper, table 3"),
        ("affine scaling (re-weighted l1)", 1.16, 78.0, "re-weighted learning paper, table 1"),
    ],
    "vgg_small_cifar10": [
        ("xRDA on VGG-16 (14.7M params), 600 epochs", 5.84, 77.0, "paper 000, table 1"),
    ],
    "lenet5_fashion_mnist": [
        ("dense", 8.1, 1.0, "LOBSTER paper, table 4"),
        ("Tartaglione et al. 2018", 8.5, 11.74, "LOBSTER paper, table 4"),
        ("LOBSTER", 8.47, 23.31, "LOBSTER paper, table 4"),
    ],
}

MNIST_SPLITS = dict(train_split="train[:54000]", validation_split="train[54000:]")
CIFAR_SPLITS = dict(train_split="train[:45000]", validation_split="train[45000:]")


def _mnist_methods(xrda_l1: float, epochs: int, sgd_lr: float = 0.1) -> dict[str, dict]:
  """Method name -> config overrides. `{sparsity}` is filled with xrda's measured sparsity.

  `sgd_lr` is the dense baseline's step size (train/configs/<model>_mnist_sgd.py), shared by
  the SGD-based methods."""
  prune_at = int(epochs * 2 / 3)
  xrda = dict(optimizer="xrda", learning_rate=0.5, momentum_timescale=9.5, l1=xrda_l1,
              maximum_factor=500.0, weight_decay=5e-4)
  return {
      "xrda (log-l1)": xrda,
      "dense SGD": dict(optimizer="sgd", learning_rate=sgd_lr, momentum=0.9, weight_decay=5e-4),
      "xrda, uniform l1": {**xrda, "l1_weights": "uniform"},
      "prox-SGD (α≡0), uniform l1": {**xrda, "l1_weights": "uniform", "averaging": "zero"},
      "RDA-style (α≡1), uniform l1": {**xrda, "l1_weights": "uniform", "averaging": "one"},
      "RDA + ASR (paper 001)": dict(optimizer="rda", rda_gamma=20.0, l1=1e-4, init="uniform",
                                    init_scale=2.0, weight_decay=0.0,
                                    freeze_zeros_epoch=prune_at),
      "magnitude pruning (Han)": dict(optimizer="sgd", learning_rate=sgd_lr, momentum=0.9,
                                      weight_decay=5e-4, pruning="once",
                                      pruning_begin_epoch=prune_at, pruning_sparsity="{sparsity}"),
      "gradual pruning (Zhu & Gupta)": dict(optimizer="sgd", learning_rate=sgd_lr, momentum=0.9,
                                            weight_decay=5e-4, pruning="gradual",
                                            pruning_begin_epoch=1, pruning_end_epoch=prune_at,
                                            pruning_frequency=100,
                                            pruning_sparsity="{sparsity}"),
      "affine scaling l1 + pruning": dict(optimizer="affine_scaling", learning_rate=sgd_lr,
                                          momentum=0.9, weight_decay=0.0, affine_method="l1",
                                          affine_tau=0.1, pruning="once",
                                          pruning_begin_epoch=prune_at,
                                          pruning_sparsity="{sparsity}"),
      "magnitude pruning (Han), global": dict(optimizer="sgd", learning_rate=sgd_lr, momentum=0.9,
                                              weight_decay=5e-4, pruning="once",
                                              pruning_scope="global",
                                              pruning_begin_epoch=prune_at,
                                              pruning_sparsity="{sparsity}"),
      "affine scaling l1 + pruning, global": dict(optimizer="affine_scaling", learning_rate=sgd_lr,
                                                  momentum=0.9, weight_decay=0.0,
                                                  affine_method="l1", affine_tau=0.1,
                                                  pruning="once", pruning_scope="global",
                                                  pruning_begin_epoch=prune_at,
                                                  pruning_sparsity="{sparsity}"),
      "LOBSTER": dict(optimizer="lobster", learning_rate=sgd_lr, momentum=0.0, weight_decay=0.0,
                      lr_schedule="constant", lobster_strength=1e-4, lobster_patience=3,
                      lobster_tolerance=0.05),
  }


def _cifar_methods(epochs: int) -> dict[str, dict]:
  """xrda at two λ (the reference is chosen on validation) against the CPU-budget baselines."""
  prune_at = int(epochs * 2 / 3)
  sgd = dict(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, l1=0.0)
  return {
      "xrda (log-l1)": dict(optimizer="xrda", l1=1e-4),
      "xrda (log-l1), λ 3e-5": dict(optimizer="xrda", l1=3e-5),
      "dense SGD": sgd,
      "magnitude pruning (Han)": {**sgd, "pruning": "once", "pruning_begin_epoch": prune_at,
                                  "pruning_sparsity": "{sparsity}"},
      "gradual pruning (Zhu & Gupta)": {**sgd, "pruning": "gradual", "pruning_begin_epoch": 0,
                                        "pruning_end_epoch": prune_at, "pruning_frequency": 50,
                                        "pruning_sparsity": "{sparsity}"},
  }


def _fashion_methods(epochs: int) -> dict[str, dict]:
  """LeNet-5 on Fashion-MNIST: xrda, dense, gradual pruning and LOBSTER (its TWT 0.1)."""
  mnist = _mnist_methods(1e-5, epochs, sgd_lr=0.05)
  methods = {k: mnist[k] for k in ("xrda (log-l1)", "dense SGD", "gradual pruning (Zhu & Gupta)")}
  methods["LOBSTER"] = {**mnist["LOBSTER"], "lobster_tolerance": 0.1}
  return methods


EXPERIMENTS = {
    "lenet300100_mnist": dict(config="train.configs.lenet300100_mnist_xrda", epochs=30,
                              data=MNIST_SPLITS, methods=lambda e: _mnist_methods(1e-5, e)),
    "lenet5_mnist": dict(config="train.configs.lenet5_mnist_xrda", epochs=6, data=MNIST_SPLITS,
                         methods=lambda e: _mnist_methods(2e-5, e, sgd_lr=0.05)),
    # Experiment 3, CPU budget. The reference (whose sparsity the pruning baselines get) is the
    # xrda run with the lowest validation error among those at >= 90% weight sparsity.
    "vgg_small_cifar10": dict(config="train.configs.vgg_small_cifar10_xrda_cpu", epochs=4,
                              data=CIFAR_SPLITS,
                              references=("xrda (log-l1)", "xrda (log-l1), λ 3e-5"),
                              methods=_cifar_methods),
    # Experiment 4: LOBSTER's table 4. λ halved from MNIST's (Fashion-MNIST is less sparse);
    # no search.
    "lenet5_fashion_mnist": dict(
        config="train.configs.lenet5_mnist_xrda", epochs=6,
        data={**MNIST_SPLITS, "dataset": "fashion_mnist"},
        methods=_fashion_methods),
}


def _workdir(experiment: str, method: str) -> Path:
  return REPO / "runs" / "compare" / experiment / method.replace(" ", "_").replace("/", "-")


def _last_record(experiment: str, method: str) -> dict:
  lines = (_workdir(experiment, method) / "metrics.jsonl").read_text().splitlines()
  return json.loads(lines[-1])


def _weight_sparsity(record: dict) -> float:
  """Fraction of zeros among conv/linear kernels (the leaves that pruning acts on)."""
  kernels = [v for k, v in record["layers"].items() if k.endswith("kernel")]
  total = sum(v["total"] for v in kernels)
  return 1 - sum(v["nonzeros"] for v in kernels) / total


def _save_json(path: Path, data: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


MIN_REFERENCE_SPARSITY = 0.9


def choose_reference(rows: dict[str, tuple[float, float]]) -> str:
  """Among xrda runs {name: (weight sparsity, validation error)}, the one with the lowest
  validation error that reaches `MIN_REFERENCE_SPARSITY` (else the sparsest): never the test set."""
  sparse = [n for n, (sparsity, _) in rows.items() if sparsity >= MIN_REFERENCE_SPARSITY]
  if not sparse:
    return max(rows, key=lambda n: rows[n][0])
  return min(sparse, key=lambda n: rows[n][1])


def _references(experiment: str) -> tuple[str, ...]:
  return EXPERIMENTS[experiment].get("references", ("xrda (log-l1)",))


def _epochs_done(workdir: Path) -> int:
  metrics = workdir / "metrics.jsonl"
  return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def _reference_sparsity(experiment: str) -> float:
  """Weight sparsity of the xrda run the pruning baselines get (see `choose_reference`); every
  candidate must have finished."""
  spec = EXPERIMENTS[experiment]
  rows = {}
  for name in _references(experiment):
    done = _epochs_done(_workdir(experiment, name))
    if done < spec["epochs"]:
      raise RuntimeError(f"{experiment}: the pruning baselines prune to the sparsity of the "
                         f"reference xrda run, chosen among {list(_references(experiment))}; "
                         f"{name!r} has {done}/{spec['epochs']} epochs: run it first.")
    record = _last_record(experiment, name)
    rows[name] = (_weight_sparsity(record), 1 - record.get("val_accuracy", float("nan")))
  return rows[choose_reference(rows)][0]


def _make_config(experiment: str, settings: dict, data_dir: str | None):
  """The experiment's base config with its splits and a method's settings;
  "{sparsity}" stands for the sparsity the reference xrda run reached."""
  spec = EXPERIMENTS[experiment]
  config = importlib.import_module(spec["config"]).get_config()
  for key, value in {**spec["data"], "progress_bar": False, "data_dir": data_dir,
                     **settings}.items():
    config[key] = round(_reference_sparsity(experiment), 4) if value == "{sparsity}" else value
  return config


def run(experiment: str, methods: list[str] | None, data_dir: str | None) -> Path:
  from train import train  # heavy imports only when training
  spec = EXPERIMENTS[experiment]
  epochs = spec["epochs"]
  table = spec["methods"](epochs)
  out_path = RESULTS / f"{experiment}.json"
  for name, overrides in table.items():
    if methods and name not in methods:
      continue
    config = _make_config(experiment, {"num_epochs": epochs, **overrides}, data_dir)
    workdir = _workdir(experiment, name)
    epochs_before = _epochs_done(workdir)
    start = time.time()
    record = train.train_and_evaluate(config, workdir)
    wall = time.time() - start
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    if epochs_before >= epochs:  # already trained: this call only evaluated
      wall = results.get(name, {}).get("wall_time_s", float("nan"))
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    results[name] = {
        "test_error": 100 * (1 - record["test_accuracy"]),
        "val_error": 100 * (1 - record.get("val_accuracy", float("nan"))),
        "compression": record["compression"],
        "density": record["density"],
        "weight_sparsity": _weight_sparsity(record),
        "nonzeros": record["nonzeros"],
        "total": record["total"],
        "layers": {k: v["density"] for k, v in record["layers"].items()},
        "epochs": epochs,
        "wall_time_s": wall,
        "epoch_time_s": [json.loads(x)["epoch_time_s"] for x in lines],
        "overrides": {k: v for k, v in config.to_dict().items()
                      if k in overrides or k in spec["data"]},
        "config": spec["config"],
    }
    results["_machine"] = machine()
    _save_json(out_path, results)
    print(f"{experiment} / {name}: error {results[name]['test_error']:.2f}%, "
          f"compression {results[name]['compression']:.1f}x, {wall:.0f} s", flush=True)
  return out_path


SEARCH = {
    # (method, overrides), selected on the validation split. xrda: the threshold λB grows with
    # the summed step size, so a longer run wants a smaller λ for the same sparsity.
    "lenet300100_mnist": [
        ("xrda (log-l1)", dict(num_epochs=60, l1=4e-6)),
        ("xrda (log-l1)", dict(num_epochs=120, l1=2e-6)),
        ("RDA + ASR (paper 001)", dict(rda_gamma=0.5, l1=2e-4)),
        ("affine scaling l1 + pruning", dict(learning_rate=2.0, affine_tau=0.1)),
        # RDA moves θ by √n·ḡ/γ and zeroes |θ_0γ/√n − ḡ| ≤ λ: γ=20 barely trains, γ=0.5
        # diverges (first step 1/γ); γ=2 starts at 0.5, and λ sits near the mean gradients.
        ("RDA + ASR (paper 001)", dict(rda_gamma=2.0, l1=1e-3)),
        ("RDA + ASR (paper 001)", dict(rda_gamma=2.0, l1=3e-4)),
        ("RDA + ASR (paper 001)", dict(rda_gamma=1.0, l1=2e-3)),
        # ω² ≈ (|θ| + τ)² scales the step by ~1e-2 at τ 0.1: a larger s_0, or τ 1 (near SGD).
        ("affine scaling l1 + pruning, global", dict(learning_rate=1.0, affine_tau=0.1)),
        ("affine scaling l1 + pruning, global", dict(learning_rate=0.1, affine_tau=1.0)),
    ],
    # At 6 epochs LOBSTER's plateau detector (PWE 3) never fired: what a longer budget gives.
    "lenet5_mnist": [
        ("LOBSTER", dict(num_epochs=20, lobster_patience=2)),
        # The s_0 that brought affine scaling from 5.2% to 3.4% on LeNet-300-100.
        ("affine scaling l1 + pruning, global", dict(learning_rate=1.0, affine_tau=0.1)),
    ],
}


def search(experiment: str, data_dir: str | None) -> Path:
  """Runs SEARCH[experiment]; selection uses the validation split, never the test set."""
  from train import train
  spec = EXPERIMENTS[experiment]
  out_path = RESULTS / f"search_{experiment}.json"
  found = json.loads(out_path.read_text()) if out_path.exists() else {}
  for method, overrides in SEARCH[experiment]:
    key = method + ": " + " ".join(f"{k}={v:g}" for k, v in overrides.items())
    if key in found:
      continue
    config = _make_config(experiment, {"num_epochs": spec["epochs"],
                                       **spec["methods"](spec["epochs"])[method], **overrides},
                          data_dir)
    workdir = REPO / "runs" / "search" / experiment / key.replace(" ", "_").replace(":", "")
    start = time.time()
    try:
      record = train.train_and_evaluate(config, workdir)
    except FloatingPointError as e:  # a diverged setting is a result of the search too
      found[key] = {"diverged": str(e).split(":")[0], "epochs": config.num_epochs,
                    "wall_time_s": time.time() - start}
      _save_json(out_path, found)
      print(f"search {experiment} {key}: {found[key]['diverged']}", flush=True)
      continue
    found[key] = {"val_error": 100 * (1 - record["val_accuracy"]),
                  "test_error": 100 * (1 - record["test_accuracy"]),
                  "compression": record["compression"], "epochs": config.num_epochs,
                  "wall_time_s": time.time() - start}
    _save_json(out_path, found)
    print(f"search {experiment} {key}: val {found[key]['val_error']:.2f}% "
          f"compression {found[key]['compression']:.1f}x", flush=True)
  return out_path


# Per experiment, then for every experiment.
EXPERIMENT_NOTES = {
    "vgg_small_cifar10": {
        "xrda (log-l1)": "λ 1e-4; the paper's VGG settings otherwise (s_0 1.0, T 9.5, F 500)",
        "xrda (log-l1), λ 3e-5": "as above with λ 3e-5",
        "magnitude pruning (Han)": "one shot at epoch 2 of 4, every layer to the same sparsity",
        "gradual pruning (Zhu & Gupta)": "cubic schedule over epochs 0–2 of 4, every 50 steps",
    },
    "lenet5_mnist": {
        "LOBSTER": "PWE 3, TWT 0.05, λ 1e-4: no plateau within 6 epochs, so it never pruned",
    },
    "lenet5_fashion_mnist": {
        "xrda (log-l1)": "λ 1e-5 (half of MNIST's), no search",
        "LOBSTER": "PWE 3, TWT 0.1 (paper), λ 1e-4: no plateau within 6 epochs, never pruned",
    },
}
NOTES = {
    "xrda (log-l1)": "λ from the README config; no search at this budget",
    "magnitude pruning (Han)": "one shot at 2/3 of the run, every layer to the same sparsity",
    "magnitude pruning (Han), global": "one shot at 2/3 of the run, one global threshold",
    "gradual pruning (Zhu & Gupta)": "cubic schedule from epoch 1 to 2/3 of the run, per layer",
    "affine scaling l1 + pruning": "ω² preconditioning (τ=0.1), then one-shot pruning per layer",
    "affine scaling l1 + pruning, global": "as above, one global threshold",
    "LOBSTER": "PWE 3 epochs (paper: 20), TWT 0.05, λ 1e-4, plain SGD",
    "RDA + ASR (paper 001)": "γ=20, λ=1e-4, uniform init ×2: steps of 1/(γ√n) barely train "
                             "(the search tries γ 0.5–2)",
    "xrda, uniform l1": "same λ as xrda: the log-l1 weights (up to 500×) are what sparsify",
}


def report() -> Path:
  """short_budgets.md (one table per experiment, ours beside the published) and one PNG each."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  lines = ["# Earlier comparison at short budgets (4-30 epochs): every method on equal footing", "",
           "Produced by `python -m benchmarks.compare_methods --experiment NAME` (one command per "
           "experiment) and `--report`. Test error is on the test set, which no method saw; the "
           "last 6000 training images are a validation split held out of training for every "
           "method. Compression = all parameters (biases included) / non-zeros. Published rows are "
           "copied from the papers (SPEC §5), not rerun.", ""]
  for path in sorted(RESULTS.glob("*.json")):
    experiment = path.stem
    if experiment.startswith("search_"):
      continue
    results = json.loads(path.read_text())
    machine = results.pop("_machine", "unknown machine")
    ours = sorted(results.items(), key=lambda kv: -kv[1]["compression"])
    epochs = next(iter(results.values()))["epochs"]
    notes = EXPERIMENT_NOTES.get(experiment, {})
    candidates = _references(experiment)
    reference = None
    if all(n in results for n in candidates):
      reference = choose_reference({n: (results[n]["weight_sparsity"], results[n]["val_error"])
                                    for n in candidates})
    lines += [f"## {experiment}", "",
              f"Budget: {epochs} epochs for every method, batch 128. Machine: {machine} "
              "(shared with other jobs: wall times are upper bounds).",
              f"Command: `python -m benchmarks.compare_methods --experiment {experiment}`"]
    if reference in results:
      chosen = (f", chosen on validation among {', '.join(f'`{n}`' for n in candidates)} "
                f"(the lowest validation error at ≥ {MIN_REFERENCE_SPARSITY:.0%} sparsity)"
                if len(candidates) > 1 else "")
      lines.append(f"The pruning baselines prune to the sparsity of `{reference}`{chosen}: "
                   f"{100 * results[reference]['weight_sparsity']:.1f}% of the conv/linear "
                   "weights.")
    lines += ["",
              "| method | test error % | val. error % | compression × | non-zeros | wall time "
              "| per-layer density | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in ours:
      layers = ", ".join(f"{k.rsplit('/', 1)[0]} {v:.3f}" for k, v in r["layers"].items()
                         if k.endswith("kernel"))
      lines.append(f"| {name} | {r['test_error']:.2f} | {r['val_error']:.2f} | "
                   f"{r['compression']:.1f} | "
                   f"{r['nonzeros']:,} / {r['total']:,} | {r['wall_time_s'] / 60:.1f} min | "
                   f"{layers} | {notes.get(name, NOTES.get(name, ''))} |")
    for name, err, comp, source in PUBLISHED.get(experiment, []):
      lines.append(f"| *published*: {name} ({source}) | {err:.2f} | | {comp:.0f} | | | | |")
    search_path = RESULTS / f"search_{experiment}.json"
    if search_path.exists():
      lines += ["", f"Search (`python -m benchmarks.compare_methods --search {experiment}`): "
                "selected on the validation split; test error shown for the record only.", "",
                "| run | validation error % | test error % | compression × | epochs |",
                "|---|---|---|---|---|"]
      for key, r in sorted(json.loads(search_path.read_text()).items()):
        if "diverged" in r:
          lines.append(f"| {key} | {r['diverged'].lower()} | | | {r['epochs']} |")
          continue
        lines.append(f"| {key} | {r['val_error']:.2f} | {r['test_error']:.2f} | "
                     f"{r['compression']:.1f} | {r['epochs']} |")
    png = RESULTS / f"{experiment}.png"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in ours:
      ax.scatter(r["compression"], r["test_error"], s=40)
      ax.annotate(name, (r["compression"], r["test_error"]), fontsize=7,
                  xytext=(4, 2), textcoords="offset points")
    for name, err, comp, _ in PUBLISHED.get(experiment, []):
      ax.scatter(comp, err, marker="x", color="gray")
      ax.annotate(f"{name} (published)", (comp, err), fontsize=6, color="gray",
                  xytext=(4, -8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("compression (all params / non-zeros), log scale")
    ax.set_yscale("log")  # the interesting differences are between 1% and 3%
    ax.set_ylabel("test error %, log scale")
    ax.set_title(experiment)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    lines += ["", f"![{experiment}]({png.name})", ""]
  out = RESULTS / "short_budgets.md"
  out.write_text("\n".join(lines) + "\n")
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--experiment", choices=sorted(EXPERIMENTS))
  parser.add_argument("--methods", help="method names separated by ';' (default: all)")
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's)")
  parser.add_argument("--report", action="store_true", help="write short_budgets.md and plots")
  parser.add_argument("--search", choices=sorted(SEARCH),
                      help="run the hyper-parameter search of an experiment (validation split)")
  args = parser.parse_args(argv)
  if not (args.experiment or args.report or args.search):
    parser.error("give --experiment, --search and/or --report")
  if args.search:
    print(search(args.search, args.data_dir))
  if args.experiment:
    methods = args.methods.split(";") if args.methods else None
    if methods:
      unknown = set(methods) - set(EXPERIMENTS[args.experiment]["methods"](1))
      if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")
    run(args.experiment, methods, args.data_dir)
  if args.report:
    print(report())


if __name__ == "__main__":
  sys.exit(main())
