"""A run's folder, the workdir of ``train.main``: the one module that knows its layout, reads
and writes its config and records, rebuilds its model and restores its state (through
``train.checkpointing``). The loop, export, the sweeps, the benchmarks and the notebooks reach a
run through it::

    WORKDIR/
      config.json            the run's config, written at each start; a resumption checks it
      metrics.jsonl          one JSON record per epoch
      checkpoints/<step>/    orbax
      events.out.tfevents.*  TensorBoard (clu)
      export/                train.export's artifact and report
      .running.process<i>    the training lock of process i (local workdirs)

A workdir is any path orbax accepts, a local directory or a bucket (``gs://…``, where the
bucket is reachable): the loop's own files go through ``etils.epath``, as orbax's do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from etils import epath

from train.locks import is_remote  # (there: the locks import nothing else of train/)

if TYPE_CHECKING:
  import ml_collections
  from flax import nnx

# JAX, flax and orbax are imported where a model or checkpoint is read: the sweep runner and
# the report read configs and records without them.

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EXPORT = "export"

PathLike = str | os.PathLike


def path(workdir: PathLike) -> epath.Path:
  """``workdir`` as an absolute ``epath.Path`` (orbax reads absolute paths only)."""
  if is_remote(workdir):
    return epath.Path(workdir)
  return epath.Path(os.path.abspath(os.fspath(workdir)))


def config_file(workdir: PathLike) -> epath.Path:
  return path(workdir) / CONFIG


def metrics_file(workdir: PathLike) -> epath.Path:
  return path(workdir) / METRICS


def checkpoints_dir(workdir: PathLike) -> epath.Path:
  return path(workdir) / CHECKPOINTS


def export_dir(workdir: PathLike) -> epath.Path:
  return path(workdir) / EXPORT


# ------------------------------------------------------------------------------- config


def write_config(workdir: PathLike, config: ml_collections.ConfigDict) -> None:
  """Saves ``config`` atomically: another process of the run may be reading the previous one."""
  target = config_file(workdir)
  partial = target.parent / f"{CONFIG}.tmp{os.getpid()}"
  partial.write_text(config.to_json_best_effort(indent=2) + "\n")
  partial.replace(target)


def saved_config(workdir: PathLike) -> dict[str, Any] | None:
  """The config the run saved, with the fields added since at the values that train as it did
  (``checkpointing.ADDED_FIELDS``); None if it saved none."""
  from train import checkpointing  # pylint: disable=g-import-not-at-top
  file = config_file(workdir)
  if not file.exists():
    return None
  return {**checkpointing.ADDED_FIELDS, **json.loads(file.read_text())}


def read_config(workdir: PathLike) -> dict[str, Any]:
  """The run's saved config (see ``saved_config``).

  Raises:
    FileNotFoundError: no such workdir, or no ``config.json`` in it.
  """
  directory = path(workdir)
  if not directory.is_dir():
    raise FileNotFoundError(f"Workdir {directory} does not exist.")
  config = saved_config(directory)
  if config is None:
    raise FileNotFoundError(f"No {CONFIG} in {directory}: not a workdir of train.main, which "
                            "saves the run's config there.")
  return config


def check_resumable(config: ml_collections.ConfigDict, workdir: PathLike) -> None:
  """Raises ``ValueError`` when ``workdir`` holds checkpoints of another config (see
  ``checkpointing.check_same_run``)."""
  from train import checkpointing  # pylint: disable=g-import-not-at-top
  if checkpointing.has_checkpoints(checkpoints_dir(workdir)):
    checkpointing.check_same_run(config, saved_config(workdir), path(workdir))


# ------------------------------------------------------------------------------ records


def append_record(workdir: PathLike, record: Mapping[str, Any]) -> None:
  with metrics_file(workdir).open("a") as f:
    f.write(json.dumps(record) + "\n")


def records(workdir: PathLike) -> list[dict[str, Any]]:
  """The run's epoch records, in order (none if it has written none); a line being written is
  left out."""
  file = metrics_file(workdir)
  out = []
  for line in file.read_text().splitlines() if file.exists() else []:
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return out


def last_record(workdir: PathLike) -> dict[str, Any] | None:
  """The last complete record (only that line is parsed: a sweep asks often)."""
  file = metrics_file(workdir)
  for line in reversed(file.read_text().splitlines() if file.exists() else []):
    try:
      return json.loads(line)
    except json.JSONDecodeError:  # a line being written
      continue
  return None


# -------------------------------------------------------------------------------- model


def build_model(config: Mapping[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
  """The config's model, as the loop builds it (``config.model``, ``init``, ``init_scale``, the
  dataset's classes and image shape).

  Raises:
    ValueError: a config without a model or dataset, or an unknown model or dataset.
  """
  import models  # pylint: disable=g-import-not-at-top
  from train import input_pipeline, steps  # pylint: disable=g-import-not-at-top
  for key in ("model", "dataset"):
    if key not in config:
      raise ValueError(f"The config has no {key!r}.")
  if config["model"] not in models.MODELS:
    raise ValueError(f"Unknown model {config['model']!r}; valid names: "
                     f"{', '.join(sorted(models.MODELS))}.")
  spec = input_pipeline.spec(config["dataset"])  # ValueError for an unknown dataset
  return steps.build_model(config, spec.num_classes, spec.image_shape, rngs=rngs)


def restore(workdir: PathLike) -> tuple[dict[str, Any], int, nnx.Module]:
  """``(config, step, model)`` of a ``train.main`` workdir: its saved config, the latest
  checkpoint's step and the model holding that checkpoint's params and BatchNorm statistics
  (the optimizer state stays on disk), in eval mode.

  Raises:
    FileNotFoundError: no such workdir, no ``config.json`` in it, or no checkpoint.
    ValueError: a config without a model or dataset, an unknown model or dataset, or a
      checkpoint that does not hold the config's model.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top,redefined-outer-name
  from train import checkpointing  # pylint: disable=g-import-not-at-top
  config = read_config(workdir)
  try:
    abstract = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
  except ValueError as e:
    raise ValueError(f"{config_file(workdir)}: {e}") from None
  abstract.eval()
  graphdef, params, batch_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(batch_stats)})
  what = f"a {config['model']} for {config['dataset']}, as {config_file(workdir)} says"
  step, restored = checkpointing.restore_part(checkpoints_dir(workdir), target, what)
  return config, step, nnx.merge(graphdef, restored["params"], restored["batch_stats"])
