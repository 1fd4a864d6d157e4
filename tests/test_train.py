"""End-to-end tests of the training loop (train/train.py, train/main.py, train/configs).

Tiny models on ``tfds.testing.mock_data``; one subprocess with 4 fake CPU devices
(the device count is fixed when JAX starts); a short real-MNIST run when the
offline raw data is there. Run as a script, this file is that subprocess's worker.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUM_EXAMPLES = 128  # per mock split: 4 train steps of 32 per epoch
METRIC_KEYS = {
    "epoch", "step", "learning_rate", "train_loss", "train_accuracy", "test_loss",
    "test_accuracy", "density", "compression", "nonzeros", "total", "kernels", "zero_kernels",
    "channels", "zero_channels", "epoch_time_s", "layers",
}


def _config(**overrides):
  from train.configs import default
  config = default.get_config()
  config.model = "vgg_tiny"  # BatchNorm, convs
  config.dataset = "cifar10"  # augmentation path
  config.num_epochs = 2
  config.batch_size = 32
  config.eval_batch_size = 48  # 128 test examples: a padded last batch
  config.prepare_data = False
  config.learning_rate = 0.5
  config.l1 = 1e-3
  config.max_checkpoints_to_keep = 5
  config.progress_bar = False
  for key, value in overrides.items():
    config[key] = value
  return config


def _run(workdir, hooks=(), **overrides):
  import tensorflow_datasets as tfds
  from train import input_pipeline, train
  input_pipeline.clear_cache()
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    return train.train_and_evaluate(_config(**overrides), workdir, hooks=hooks)


def _latest_checkpoint(workdir, step=None):
  """(step, state as numpy arrays) of the latest checkpoint (or of `step`), whatever device
  count wrote it."""
  import jax
  import orbax.checkpoint as ocp
  if step is None:
    step = ocp.CheckpointManager(Path(workdir) / "checkpoints").latest_step()
  path = Path(workdir) / "checkpoints" / str(step) / "default"
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path).item_metadata.tree)
  return step, jax.tree.map(np.asarray, checkpointer.restore(path, target))


def _worker(workdir: str, devices: int) -> None:
  """``devices`` fake devices: the mock run and, on 4, a batch size that does not divide."""
  import jax
  assert jax.device_count() == devices, jax.devices()
  if devices == 1:
    _run(os.path.join(workdir, "run"))
    return
  try:
    _run(os.path.join(workdir, "bad"), batch_size=30)
  except ValueError as e:
    assert "multiple of the device count (4)" in str(e), e
    assert not os.path.exists(os.path.join(workdir, "bad")), "validation must precede any work"
  else:
    raise AssertionError("batch_size=30 on 4 devices must raise ValueError")
  _run(os.path.join(workdir, "run"))


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  _worker(sys.argv[1], int(sys.argv[2]))
  sys.exit(0)


# ----------------------------------------------------------------------------- tests

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import sparse_optax as so  # noqa: E402
from train import steps, train  # noqa: E402
from train.configs import default  # noqa: E402


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  """An uninterrupted run on one device: (workdir, final metrics)."""
  workdir = tmp_path_factory.mktemp("baseline")
  return workdir, _run(workdir)


def _records(workdir):
  return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_end_to_end_mock_data(baseline):
  workdir, final = baseline
  records = _records(workdir)
  assert [r["epoch"] for r in records] == [1, 2]
  assert [r["step"] for r in records] == [4, 8]
  for record in records:
    assert set(record) == METRIC_KEYS
    assert 0.0 <= record["test_accuracy"] <= 1.0 and np.isfinite(record["test_loss"])
    assert record["total"] == 1610  # vgg_tiny, 10 classes
    assert set(record["layers"]) >= {"stages/0/0/conv/kernel", "stages/0/0/bn/scale",
                                     "classifier/kernel"}
    assert record["compression"] == pytest.approx(1 / record["density"], rel=1e-5)
  # xRDA makes weights exactly zero, more of them as training goes on.
  assert records[-1]["density"] < records[0]["density"] <= 1.0
  assert records[-1]["density"] < 0.9
  assert final == records[-1]
  config = json.loads((Path(workdir) / "config.json").read_text())
  assert config["model"] == "vgg_tiny" and config["optimizer"] == "xrda"
  assert list(Path(workdir).glob("events.out.tfevents.*"))  # TensorBoard
  step, state = _latest_checkpoint(workdir)
  assert step == 8 and int(state["step"]) == 8
  assert set(state) == {"step", "params", "batch_stats", "opt_state", "train_metrics"}
  # the epoch's running averages, checkpointed: they give the logged train loss
  metrics = state["train_metrics"]
  assert float(metrics["loss"]["total"]) / int(metrics["loss"]["count"]) == pytest.approx(
      records[-1]["train_loss"], rel=1e-6)
  assert int(metrics["loss"]["count"]) == 4  # the steps of the last epoch


def test_rerun_of_finished_run_only_evaluates(baseline, tmp_path, capsys):
  import shutil
  workdir = tmp_path / "copy"
  shutil.copytree(baseline[0], workdir)
  capsys.readouterr()
  final = _run(workdir)
  printed = capsys.readouterr().out  # the chief prints the final figures
  assert (f"Final: test accuracy {final['test_accuracy']:.4f}, density {final['density']:.4f} "
          f"({final['nonzeros']}/{final['total']} non-zeros)") in printed
  assert final["step"] == 8
  assert final["test_accuracy"] == baseline[1]["test_accuracy"]
  assert len(_records(workdir)) == 2  # nothing trained, nothing appended


def test_resume_refuses_a_different_config(baseline, tmp_path):
  import shutil
  workdir = tmp_path / "copy"
  shutil.copytree(baseline[0], workdir)
  with pytest.raises(ValueError, match=r"different config \(learning_rate: 0.5 -> 0.1\)"):
    _run(workdir, learning_rate=0.1)
  # Where data comes from and how progress shows may change: this only evaluates again.
  final = _run(workdir, progress_bar=True, eval_batch_size=64)
  assert final["test_accuracy"] == baseline[1]["test_accuracy"]


def test_a_field_added_later_resumes_at_its_old_behaviour_only(baseline, tmp_path):
  import json
  import shutil

  from train import checkpointing
  workdir = tmp_path / "copy"
  shutil.copytree(baseline[0], workdir)
  saved = json.loads((workdir / "config.json").read_text())
  for field in checkpointing.ADDED_FIELDS:  # as written before the field existed
    del saved[field]
  (workdir / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"different config \(affine_greedy: False -> True\)"):
    _run(workdir, affine_greedy=True)
  assert _run(workdir)["test_accuracy"] == baseline[1]["test_accuracy"]


@pytest.mark.parametrize("interrupt_at", [6])  # mid-way through the second epoch
def test_resume_after_interrupt_is_exact(baseline, tmp_path, interrupt_at):
  def hook(step):
    if step == interrupt_at:
      raise KeyboardInterrupt

  workdir = tmp_path / "interrupted"
  with pytest.raises(KeyboardInterrupt):
    _run(workdir, hooks=[hook])
  step, _ = _latest_checkpoint(workdir)
  assert step == interrupt_at  # saved on the way out

  final = _run(workdir)  # the same command again: resumes
  assert final["step"] == 8
  _, resumed = _latest_checkpoint(workdir)
  _, expected = _latest_checkpoint(baseline[0])
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)
  assert final["test_accuracy"] == baseline[1]["test_accuracy"]
  assert final["density"] == baseline[1]["density"]


def _assert_same_as_baseline(workdir, baseline):
  _, resumed = _latest_checkpoint(workdir)
  _, expected = _latest_checkpoint(baseline[0])
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)
  for got, want in zip(_records(workdir), _records(baseline[0]), strict=True):
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "density"):
      assert got[key] == want[key], (got["epoch"], key)


def test_sigterm_checkpoints_at_the_step_and_a_rerun_is_exact(baseline, tmp_path):
  """As a preemption: SIGTERM mid-epoch, a checkpoint of that step, a non-zero exit; the rerun
  ends with the uninterrupted run's params and every logged figure, the cut epoch's train-loss
  average included (the running averages are in the checkpoint)."""
  import signal

  def hook(step):
    if step == 6:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = tmp_path / "preempted"
  with pytest.raises(train.Stopped) as stopped:
    _run(workdir, hooks=[hook])
  assert stopped.value.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
  assert _latest_checkpoint(workdir)[0] == 6
  _run(workdir)
  _assert_same_as_baseline(workdir, baseline)
  # Epoch 2 (steps 5-8) resumed at step 6: its time is partial, and the record says so.
  assert [r.get("epoch_resumed_at_step") for r in _records(workdir)] == [None, 6]


def test_checkpoints_every_n_steps_written_while_training_restore_intact(baseline, tmp_path):
  workdir = tmp_path / "every3"
  _run(workdir, checkpoint_every_steps=3, max_checkpoints_to_keep=10)
  steps_saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                       if p.name.isdigit())
  assert steps_saved == [3, 4, 6, 8]
  for step in steps_saved:  # every one is whole: readable with its metadata
    assert _latest_checkpoint(workdir, step)[1]["step"] == step
  # Step 4's (epoch end) was written in the background while steps 5.. ran: resuming from it
  # (the later ones removed) gives the uninterrupted run exactly.
  import shutil
  for step in (6, 8):
    shutil.rmtree(workdir / "checkpoints" / str(step))
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  (workdir / "metrics.jsonl").write_text(lines[0] + "\n")
  _run(workdir, checkpoint_every_steps=0)  # checkpoint frequency may change on resume
  _assert_same_as_baseline(workdir, baseline)


def test_a_corrupted_latest_checkpoint_is_skipped_with_a_warning(baseline, tmp_path, caplog):
  import shutil
  workdir = tmp_path / "corrupted"
  shutil.copytree(baseline[0], workdir)
  latest = workdir / "checkpoints" / "8"
  data = [p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 1000]
  assert data
  for path in data:  # garbage where the arrays were
    path.write_bytes(b"\x00garbage" * (path.stat().st_size // 9))
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  (workdir / "metrics.jsonl").write_text(lines[0] + "\n")  # epoch 2 is trained again
  with caplog.at_level("WARNING"):
    _run(workdir)
  assert any("step 8" in r.getMessage() and "cannot be read" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  _assert_same_as_baseline(workdir, baseline)


def test_a_checkpoint_of_another_model_is_a_clear_error(baseline, tmp_path):
  import shutil
  workdir = tmp_path / "other"
  shutil.copytree(baseline[0], workdir)
  (workdir / "config.json").unlink()  # no same-run check: the state itself must not fit
  with pytest.raises(ValueError, match="does not fit this config's train state"):
    _run(workdir, model="lenet5", dataset="mnist")


def test_one_device_vs_four_devices(tmp_path):
  # Both runs in processes at XLA's default level (tests/xla_flags.py): this process compiles
  # at -O0, whose rounding differs by more than the tolerance below.
  from tests import xla_flags
  for devices in (1, 4):
    env = xla_flags.env(devices, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__, str(tmp_path / str(devices)), str(devices)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
  workdir, baseline = tmp_path / "4" / "run", tmp_path / "1" / "run"
  for four, one in zip(_records(workdir), _records(baseline), strict=True):
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "density"):
      assert four[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
  # Same params, BatchNorm statistics and optimizer state up to float reassociation
  # (measured: 1.5e-8 on params, 4e-6 on the rest).
  _, four = _latest_checkpoint(workdir)
  _, one = _latest_checkpoint(baseline)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), four, one)


# ----------------------------------------------------------------------------- loop invariants


def _mock_state(**overrides):
  """(config, info, tx, model, initial state, the whole mock test split) of the mock run."""
  import tensorflow_datasets as tfds
  from train import input_pipeline
  config = _config(**overrides)
  input_pipeline.clear_cache()
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    info = input_pipeline.get_info(config.dataset)
    test = list(input_pipeline.create_split(config.dataset, "test", NUM_EXAMPLES, train=False))
  tx = train.create_optimizer(config, total_steps=8, steps_per_epoch=4)
  model, state = train.create_train_state(config, info, tx)
  return config, info, tx, model, state, test[0]


def test_train_step_returns_the_updated_batchnorm_statistics():
  _, _, tx, model, state, batch = _mock_state()
  new_state, _ = train.train_step(model, tx, state, {k: batch[k][:32] for k in ("image", "label")})
  old, new = jax.tree.leaves_with_path(state["batch_stats"]), jax.tree.leaves(new_state["batch_stats"])
  assert old
  for (path, before), after in zip(old, new, strict=True):
    assert not np.allclose(before, after), f"{jax.tree_util.keystr(path)} was not updated"


def test_eval_uses_the_running_statistics_not_the_batch():
  _, _, _, model, state, batch = _mock_state()
  batch = {k: v[:48] for k, v in batch.items()}
  state["batch_stats"] = jax.tree.map(  # statistics far from the batch's own
      lambda x: x + 3.0 if x.ndim else x, state["batch_stats"])
  first = np.zeros(len(batch["label"]), np.float32)
  first[0] = 1.0

  def loss_of_first(images):
    return float(train.eval_step(model, state, {"image": images, "label": batch["label"],
                                                "mask": first})["loss"])

  # Example 0's loss must not depend on the rest of the batch, and must depend on the statistics.
  other = np.concatenate([batch["image"][:1], np.repeat(batch["image"][1:2] * 5.0, 47, axis=0)])
  assert loss_of_first(batch["image"]) == pytest.approx(loss_of_first(other), rel=1e-5)
  reset = {**state, "batch_stats": jax.tree.map(lambda x: x - 3.0 if x.ndim else x,
                                                 state["batch_stats"])}
  changed = float(train.eval_step(model, reset, {**batch, "mask": first})["loss"])
  assert changed != pytest.approx(loss_of_first(batch["image"]), rel=1e-3)


def test_trained_batchnorm_statistics_are_checkpointed(baseline):
  _, _, _, _, initial, _ = _mock_state()
  _, state = _latest_checkpoint(baseline[0])
  for (path, before), after in zip(jax.tree.leaves_with_path(initial["batch_stats"]),
                                   jax.tree.leaves(state["batch_stats"]), strict=True):
    assert not np.allclose(before, after), f"{jax.tree_util.keystr(path)} never trained"


def test_checkpoint_reproduces_the_logged_test_figures(baseline):
  """The checkpoint holds what the loop evaluated; every test example counted once."""
  from flax import nnx
  workdir, final = baseline
  config, _, tx, model, initial, test = _mock_state()
  step, state = _latest_checkpoint(workdir)
  assert step == final["step"] == 8
  # Optimizer state: the structure tx.init makes, trained, with every step counter at 8.
  shapes = lambda tree: sorted(np.shape(x) for x in jax.tree.leaves(tree))  # noqa: E731
  assert shapes(state["opt_state"]) == shapes(initial["opt_state"])
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(state["opt_state"]), jax.tree.leaves(initial["opt_state"])))
  counts = [x for x in jax.tree.leaves(state["opt_state"]) if x.dtype.kind == "i"]
  assert counts and all(int(c) == 8 for c in counts)
  # One unpadded batch of all 128 test examples, outside the loop's eval path.
  module = nnx.merge(model.eval, state["params"], state["batch_stats"])
  logits = np.asarray(module(jax.numpy.asarray(test["image"])))
  assert len(test["label"]) == NUM_EXAMPLES
  losses = -jax.nn.log_softmax(logits)[np.arange(NUM_EXAMPLES), test["label"]]
  assert final["test_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
  assert final["test_accuracy"] == np.mean(np.argmax(logits, -1) == test["label"])


def test_logged_layer_densities_are_those_of_the_params(baseline):
  _, state = _latest_checkpoint(baseline[0])
  record = _records(baseline[0])[-1]
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree.leaves_with_path(state["params"])}
  assert set(flat) == set(record["layers"])
  for name, leaf in flat.items():
    assert record["layers"][name]["density"] == pytest.approx(
        np.count_nonzero(leaf) / leaf.size, abs=1e-7), name
    if leaf.ndim >= 2:  # Fedorov & Rao's (2018) kurtosis, E[((W - mean) / std)^4], in float64
      w = leaf.astype(np.float64)
      expected = np.mean((w - w.mean()) ** 4) / np.var(w) ** 2
      assert record["layers"][name]["kurtosis"] == pytest.approx(expected, rel=1e-4), name
    else:
      assert "kurtosis" not in record["layers"][name], name
  assert record["nonzeros"] == sum(np.count_nonzero(x) for x in flat.values())
  assert 0 < record["nonzeros"] < record["total"] == sum(x.size for x in flat.values())


def test_padded_eval_batches_count_each_example_once_on_uneven_shards():
  # 128 examples on 2 processes as tfds shards them (64 + 64) and unevenly (65 + 63), at a
  # local batch of 24: both processes run the same 3 steps, the padding masked out.
  for shards in ((64, 64), (65, 63)):
    seen = []
    for size in shards:
      ids = np.arange(size) + (0 if not seen else 1000)
      source = iter([{"image": ids[i:i + 24, None].astype(np.float32), "label": ids[i:i + 24],
                      "id": ids[i:i + 24]} for i in range(0, size, 24)])
      out = list(steps.padded_eval_batches(source, 24, num_batches=3))
      assert len(out) == 3 and all(b["label"].shape == (24,) and set(b) == {"image", "label", "mask"}
                                   for b in out)
      labels = np.concatenate([b["label"] for b in out])
      mask = np.concatenate([b["mask"] for b in out]).astype(bool)
      np.testing.assert_array_equal(labels[mask], ids)
      seen.append(int(mask.sum()))
    assert tuple(seen) == shards


def _step_size(config, count, total_steps):
  """The step the optimizer of ``config`` takes at ``count``, measured, not computed.

  With no l1, weight decay, averaging or momentum every method's update of a zero-gradient
  history followed by a gradient of ones is exactly minus its step size.
  """
  with config.unlocked():
    config.update(l1=0.0, weight_decay=0.0, momentum=0.0, averaging="zero",
                  momentum_timescale=1e-30)
  tx = train.create_optimizer(config, total_steps=total_steps, steps_per_epoch=4)
  params = {"w": jax.numpy.zeros((2, 2))}
  state = tx.init(params)
  for _ in range(count):
    _, state = tx.update(jax.tree.map(jax.numpy.zeros_like, params), state, params)
  updates, _ = tx.update(jax.tree.map(jax.numpy.ones_like, params), state, params)
  return -float(updates["w"][0, 0])


@pytest.mark.parametrize("optimizer", ["xrda", "prox_sgd", "sgd", "rda"])
def test_logged_learning_rate_is_the_one_the_optimizer_used(optimizer):
  config = _config(optimizer=optimizer, lr_schedule="cosine", rda_gamma=2.0)
  steps = [0, 3, 5, 6]
  used = [_step_size(_config(optimizer=optimizer, rda_gamma=2.0), n, 8) for n in steps]
  assert len(set(used)) == len(used)  # a schedule that changes: a step off by one shows
  for n, value in zip(steps, used):
    assert train.learning_rate_at(config, n, 8) == pytest.approx(value, rel=1e-6), n


def test_metrics_log_the_learning_rate_of_each_epochs_last_step(baseline):
  for record in _records(baseline[0]):
    step_size = _step_size(_config(), record["step"] - 1, 8)
    assert record["learning_rate"] == pytest.approx(step_size, rel=1e-6, abs=1e-12)
  assert _records(baseline[0])[0]["learning_rate"] > 0.1  # epoch 1 ends at a large step


@pytest.mark.parametrize("field,value,match", [
    ("model", "resnet1000", r"Unknown model 'resnet1000'.*lenet5.*resnet56"),
    ("dataset", "imagenet", r"Unknown dataset 'imagenet'.*cifar10.*mnist"),
    ("optimizer", "adam", r"Unknown optimizer 'adam'.*prox_sgd.*xrda"),
    ("structure", "rows", r"Unknown structure 'rows'"),
    ("batch_size", 0, r"batch_size=0 must be a positive multiple"),
    ("num_epochs", 0, r"num_epochs must be positive, got 0"),
])
def test_bad_config_values(tmp_path, field, value, match):
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(_config(**{field: value}), tmp_path / "w")
  assert not (tmp_path / "w").exists()  # rejected before any work


def test_batch_larger_than_the_data(tmp_path):
  with pytest.raises(ValueError, match=r"batch_size=256 exceeds the 128 training examples"):
    _run(tmp_path, batch_size=256)


def test_batch_not_divisible_by_device_count(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  with pytest.raises(ValueError, match=r"batch_size=30 must be .* device count \(4\)"):
    train.train_and_evaluate(_config(batch_size=30), tmp_path / "w")


def test_unknown_config_key():
  config = _config()
  assert config.is_locked
  with pytest.raises(AttributeError, match="learning_rat"):
    config.learning_rat = 0.1  # a typo in a config file
  with config.unlocked():
    config.learning_rat = 0.1
  with pytest.raises(ValueError, match=r"'learning_rat' \(did you mean 'learning_rate'\?\)"):
    train.validate_config(config)


def test_unknown_config_flag(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "train.main", "--config=train/configs/lenet5_mnist_xrda.py",
       f"--workdir={tmp_path / 'w'}", "--config.learning_rat=0.1"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert proc.returncode != 0
  assert "learning_rat" in proc.stderr
  assert not (tmp_path / "w").exists()


CONFIGS = sorted(p.stem for p in (REPO / "train" / "configs").glob("*.py")
                 if p.stem not in ("__init__",))


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_are_valid(name):
  module = importlib.import_module(f"train.configs.{name}")
  config = module.get_config()
  assert config.is_locked
  train.validate_config(config)
  assert f"--config=train/configs/{name}.py" in module.__doc__


def test_published_hyperparameters():
  vgg = importlib.import_module("train.configs.vgg16_cifar10_xrda").get_config()
  assert (vgg.batch_size, vgg.num_epochs, vgg.learning_rate, vgg.l1) == (128, 600, 1.0, 1e-6)
  assert vgg.momentum_timescale == 9.5 and vgg.maximum_factor == 500.0
  resnet = importlib.import_module("train.configs.resnet56_cifar10_xrda").get_config()
  assert (resnet.learning_rate, resnet.l1, resnet.momentum_timescale) == (0.25, 1.3e-6, 12.37)
  for config in (vgg, resnet):
    assert config.weight_decay == 5e-4
    assert (config.lr_schedule, config.averaging) == ("cosine", "cosine")


def _expected_optimizer(c, total, per_epoch):
  """What each config asks for, written out from the library (the loop's optimizer must match)."""
  lr = so.cosine_decay(c.learning_rate, total)
  avg = so.cosine_averaging(total)
  sgd = optax.chain(optax.add_decayed_weights(c.weight_decay),
                    optax.sgd(lr, momentum=c.momentum, nesterov=c.nesterov))
  return {
      "xrda": so.xrda(lr, avg, c.l1, momentum_timescale=c.momentum_timescale,
                      magnitude_timescale=c.magnitude_timescale,
                      maximum_factor=c.maximum_factor, weight_decay=c.weight_decay,
                      structure=c.structure,
                      accumulator_dtype=None if c.accumulator_dtype == "float32" else jnp.bfloat16),
      "rda": so.rda(c.rda_gamma, c.l1, weight_decay=c.weight_decay),
      "prox_sgd": so.prox_sgd(lr, c.l1, momentum=c.momentum, nesterov=c.nesterov,
                              weight_decay=c.weight_decay),
      "sgd": sgd,
      # Decoupled decay on the kernels alone (here the conv's), not the bias or BatchNorm.
      "adamw": optax.adamw(lr, weight_decay=c.weight_decay, mask={
          "conv": {"kernel": True, "bias": False}, "bn": {"scale": False}}),
      "affine_scaling": optax.chain(
          optax.add_decayed_weights(c.weight_decay),
          so.scale_by_affine_scaling(c.affine_method, tau=c.affine_tau, p=c.affine_p,
                                     period=c.affine_period_epochs * per_epoch),
          optax.sgd(lr, momentum=c.momentum, nesterov=c.nesterov)),
      "lobster": optax.chain(so.lobster(sgd, c.lobster_strength, mask=train.not_normalization),
                             so.freeze_zeros(mask=train.not_normalization)),
      # The test's params hold no layer at the default model's input path: none kept dense.
      **{name: factory(sgd, c.dst_sparsity, update_frequency=c.dst_update_steps,
                       end_step=int(c.dst_end_fraction * total),
                       drop_fraction=c.dst_drop_fraction, distribution=c.dst_distribution,
                       seed=c.seed)
         for name, factory in (("rigl", so.rigl), ("set", so.set_))},
  }[c.optimizer]


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_warmup_rises_linearly_then_the_schedule_spans_the_steps_left(schedule):
  from train import methods
  config = default.get_config()
  config.optimizer, config.learning_rate, config.lr_schedule = "adamw", 0.002, schedule
  total, warm = 110, 10
  no_warmup = 0.002 * ((1 + np.cos(np.pi * 6 / total)) / 2 if schedule == "cosine" else 1)
  assert methods.learning_rate_at(config, 5, total) == pytest.approx(no_warmup)
  config.warmup_steps = warm
  got = [methods.learning_rate_at(config, n, total) for n in (0, 5, 10, 60, 109)]
  after = {"cosine": lambda n: 0.002 * (1 + np.cos(np.pi * (n + 1) / 100)) / 2,
           "constant": lambda n: 0.002}[schedule]
  np.testing.assert_allclose(got, [0.0, 0.001, after(0), after(50), after(99)], rtol=1e-5,
                             atol=1e-9)
  config.warmup_steps = total
  with pytest.raises(ValueError, match="warmup_steps"):
    methods.learning_rate_at(config, 0, total)
  config.warmup_steps = -1
  with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
    train.validate_config(config)


@pytest.mark.parametrize("optimizer", train.OPTIMIZERS)
def test_create_optimizer_builds_what_the_config_names(optimizer):
  config = default.get_config()
  config.optimizer = optimizer
  config.l1, config.lobster_strength, config.weight_decay = 1e-2, 1e-2, 1e-3
  if optimizer == "xrda":
    config.structure, config.accumulator_dtype = "kernel", "bfloat16"
  config.dst_sparsity, config.dst_update_steps, config.dst_distribution = 0.5, 2, "erk"
  total, per_epoch = 12, 3
  params = {"conv": {"kernel": jax.random.normal(jax.random.key(0), (3, 3, 2, 4)),
                     "bias": jax.numpy.full(4, 0.1)},
            "bn": {"scale": jax.numpy.ones(4)}}

  def run(tx):
    p, state = params, tx.init(params)
    for i in range(6):
      grads = jax.tree.map(lambda x, i=i: jax.numpy.cos(x + i), p)
      updates, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, updates)
    return p

  got = run(train.create_optimizer(config, total_steps=total, steps_per_epoch=per_epoch))
  expected = run(_expected_optimizer(config, total, per_epoch))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, expected)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), got, params)
  assert all(jax.tree.leaves(changed)), changed  # every leaf trained


@pytest.mark.parametrize("extra,append", [
    (dict(freeze_zeros_epoch=2), lambda per_epoch: so.freeze_zeros(start_step=2 * per_epoch)),
    (dict(pruning="gradual", pruning_begin_epoch=1, pruning_end_epoch=3, pruning_frequency=2,
          pruning_sparsity=0.6, pruning_scope="global"),
     lambda per_epoch: so.prune_by_magnitude(
         so.polynomial_sparsity(0.6, per_epoch, 3 * per_epoch),
         begin_step=per_epoch, end_step=3 * per_epoch, frequency=2, scope="global")),
], ids=["freeze_zeros", "gradual_pruning"])
def test_create_optimizer_appends_retraining_and_pruning(extra, append):
  config = default.get_config()
  config.optimizer = "sgd"
  for k, v in extra.items():
    config[k] = v
  total, per_epoch = 12, 3
  params = {"w": jax.random.normal(jax.random.key(1), (6, 5)), "b": jax.numpy.zeros(5)}
  results = []
  for tx in (train.create_optimizer(config, total, per_epoch),
             optax.chain(_expected_optimizer(config, total, per_epoch), append(per_epoch))):
    p, state = params, tx.init(params)
    for i in range(total):
      updates, state = tx.update(jax.tree.map(lambda x, i=i: jax.numpy.sin(x * i), p), state, p)
      p = optax.apply_updates(p, updates)
    results.append(p)
  jax.tree.map(np.testing.assert_array_equal, *results)


def _raw_mnist() -> Path | None:
  root = Path(os.environ.get("SPARSE_OPTAX_RAW_DATA", REPO.parent / "shared" / "data"))
  return root if (root / "mnist").is_dir() else None


@pytest.mark.skipif(_raw_mnist() is None,
                    reason="no raw MNIST (../shared/data or $SPARSE_OPTAX_RAW_DATA)")
def test_real_mnist_short_run(tmp_path):
  from train import input_pipeline
  input_pipeline.clear_cache()
  config = importlib.import_module("train.configs.lenet5_mnist_xrda").get_config()
  config.num_epochs = 1
  config.train_split = "train[:6400]"  # 50 steps of 128
  config.eval_split = "test[:2000]"
  config.l1 = 1e-4
  config.progress_bar = False
  final = train.train_and_evaluate(config, tmp_path)
  input_pipeline.clear_cache()
  assert final["test_accuracy"] > 0.85
  assert final["density"] < 1.0


def test_logged_train_figures_average_the_epochs_batches(tmp_path):
  """With a step size of 0 the params never move, so the epoch's train loss and accuracy (one
  pass over the mock train set's 128 examples, accumulated on device) must equal an evaluation
  of the same params on the same examples; LeNet has no BatchNorm, so both modes agree."""
  final = _run(tmp_path, model="lenet300100_tiny", dataset="mnist", optimizer="sgd",
               learning_rate=0.0, weight_decay=0.0, num_epochs=1, eval_split="train")
  assert final["train_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-7)
  assert final["train_loss"] == pytest.approx(final["test_loss"], rel=1e-5)
  assert 0 < final["train_accuracy"] < 1  # an untrained model: neither all right nor all wrong


_HOLD_THE_WORKDIR = """
import fcntl, sys, time
with open(sys.argv[1], "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_training_of_a_running_workdir_is_refused(tmp_path):
  # A sweep restarted while its trainings still run would start each one twice.
  import subprocess
  import sys
  workdir = (tmp_path / "w").resolve()
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_THE_WORKDIR,
                             str(workdir / ".running.process0")], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match=r"Another training is running in .*w \(it holds "
                                           r"\.running\.process0\)"):
      _run(workdir)
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
  finally:
    holder.kill()
    holder.wait()
  assert _run(workdir)["epoch"] == 2  # the lock went with its process
