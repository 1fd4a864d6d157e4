"""The run folder (train/run_folder.py): its layout, config and records, through etils.epath;
and what guards a workdir in a bucket, which has no file locks."""

import json
import os

import ml_collections
import pytest

from train import locks, run_folder


def test_the_layout_is_named_in_one_place(tmp_path):
  assert run_folder.config_file(tmp_path) == tmp_path / "config.json"
  assert run_folder.metrics_file(tmp_path) == tmp_path / "metrics.jsonl"
  assert run_folder.checkpoints_dir(tmp_path) == tmp_path / "checkpoints"
  assert run_folder.export_dir(tmp_path) == tmp_path / "export"
  os.chdir(tmp_path)  # a relative workdir is made absolute (orbax reads absolute paths only)
  assert run_folder.path("run") == tmp_path / "run"


def test_a_bucket_workdir_stays_a_url():
  assert run_folder.is_remote("gs://bucket/runs/a") and not run_folder.is_remote("/runs/a")
  assert os.fspath(run_folder.config_file("gs://bucket/runs/a")) == "gs://bucket/runs/a/config.json"


def test_config_round_trip_and_fields_added_since(tmp_path):
  from train import checkpointing
  config = ml_collections.ConfigDict({"model": "lenet5", "dataset": "mnist", "seed": 3})
  run_folder.write_config(tmp_path, config)
  assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no partial file left
  run_folder.write_config(tmp_path, config)  # over the previous one
  saved = run_folder.read_config(tmp_path)
  assert saved == {**checkpointing.ADDED_FIELDS, "model": "lenet5", "dataset": "mnist", "seed": 3}
  with pytest.raises(FileNotFoundError, match="does not exist"):
    run_folder.read_config(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="No config.json"):
    run_folder.read_config(tmp_path / "empty")
  assert run_folder.saved_config(tmp_path / "empty") is None


def test_records_leave_out_a_line_being_written(tmp_path):
  assert run_folder.records(tmp_path) == [] and run_folder.last_record(tmp_path) is None
  run_folder.append_record(tmp_path, {"epoch": 1})
  run_folder.append_record(tmp_path, {"epoch": 2})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 3, "val')
  assert run_folder.records(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
  assert run_folder.last_record(tmp_path) == {"epoch": 2}
  assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0]) == {"epoch": 1}


def test_a_bucket_workdir_is_locked_on_this_machine_by_its_url(tmp_path):
  local = locks.training_lock(tmp_path, 1)
  assert local == tmp_path / ".running.process1"
  a, b = locks.training_lock("gs://bucket/a"), locks.training_lock("gs://bucket/b")
  assert a != b and a == locks.training_lock("gs://bucket/a") and "://" not in str(a)
  with locks.exclusive(a, wait=False):
    assert locks.held(a) and not locks.held(b)
    with pytest.raises(BlockingIOError):
      with locks.exclusive(a, wait=False):
        pass
