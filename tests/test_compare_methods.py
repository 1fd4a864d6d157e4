"""benchmarks/compare_methods.py: every method's config is valid, the pruning baselines get
the reference run's sparsity (or a clear error), and the report shows what the results say."""

import json

import pytest

from benchmarks import compare_methods as cm
from train import train

CASES = [(experiment, method) for experiment, spec in cm.EXPERIMENTS.items()
         for method in spec["methods"](spec["epochs"])]


def _fake_reference(monkeypatch, tmp_path, experiment, records):
  """Every reference candidate of `experiment` with the metrics lines `records`."""
  monkeypatch.setattr(cm, "REPO", tmp_path)
  for name in cm.EXPERIMENTS[experiment].get("references", ("xrda (log-l1)",)):
    workdir = cm._workdir(experiment, name)
    workdir.mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _record(nonzeros, total=1000):
  return {"layers": {"fc/kernel": {"nonzeros": nonzeros, "total": total},
                     "fc/bias": {"nonzeros": 10, "total": 10}}}


@pytest.mark.parametrize("experiment,method", CASES)
def test_every_method_builds_its_optimizer(experiment, method, monkeypatch, tmp_path):
  spec = cm.EXPERIMENTS[experiment]
  _fake_reference(monkeypatch, tmp_path, experiment, [_record(50)] * spec["epochs"])
  overrides = spec["methods"](spec["epochs"])[method]
  config = cm._make_config(experiment, {"num_epochs": spec["epochs"], **overrides}, None)
  for key, value in {**spec["data"], **overrides}.items():
    assert config[key] == (0.95 if value == "{sparsity}" else value), key
  tx = train.create_optimizer(config, total_steps=100, steps_per_epoch=10)
  assert callable(tx.update)


def test_pruning_baselines_need_a_finished_reference(monkeypatch, tmp_path):
  experiment = "vgg_small_cifar10"
  epochs = cm.EXPERIMENTS[experiment]["epochs"]
  _fake_reference(monkeypatch, tmp_path, experiment, [_record(50)] * (epochs - 1))
  gmp = cm.EXPERIMENTS[experiment]["methods"](epochs)["gradual pruning (Zhu & Gupta)"]
  with pytest.raises(RuntimeError, match=f"{epochs - 1}/{epochs} epochs: run it first"):
    cm._make_config(experiment, gmp, None)


def test_reference_is_chosen_on_validation_among_sparse_enough_runs():
  assert cm.choose_reference({"a": (0.98, 0.30), "b": (0.92, 0.20), "c": (0.80, 0.10)}) == "b"
  assert cm.choose_reference({"a": (0.85, 0.30), "c": (0.80, 0.10)}) == "a"  # none: sparsest
  assert cm.choose_reference({"a": (0.5, 0.3)}) == "a"


def test_report_tables_ours_beside_published(monkeypatch, tmp_path):
  monkeypatch.setattr(cm, "RESULTS", tmp_path)
  row = dict(test_error=1.234, val_error=1.5, compression=42.0, nonzeros=100, total=4200,
             weight_sparsity=0.976, layers={"fc/kernel": 0.02, "fc/bias": 1.0}, epochs=6,
             wall_time_s=120.0)
  data = {"_machine": "test machine", "xrda (log-l1)": row,
          "dense SGD": {**row, "test_error": 0.9, "compression": 1.0, "weight_sparsity": 0.0}}
  (tmp_path / "lenet5_mnist.json").write_text(json.dumps(data))
  text = cm.report().read_text()
  assert "| xrda (log-l1) | 1.23 | 1.50 | 42.0 | 100 / 4,200 | 2.0 min | fc 0.020 |" in text
  assert text.index("| xrda (log-l1) |") < text.index("| dense SGD |")  # by compression
  assert "sparsity of `xrda (log-l1)`: 97.6% of the conv/linear weights" in text
  assert "| *published*: Sparse VD (LOBSTER paper, table 3) | 0.75 | | 280 |" in text
  assert "test machine" in text and (tmp_path / "lenet5_mnist.png").stat().st_size > 0
