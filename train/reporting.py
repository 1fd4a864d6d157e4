"""Where each epoch's record goes: ``metrics.jsonl``, TensorBoard (clu) and one line of stdout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from clu import metric_writers

from train import run_folder


def to_python(tree: Any) -> Any:
  """Arrays to Python scalars and lists (for JSON)."""
  def convert(x):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()
  return jax.tree.map(convert, tree)


def scalars_for_tensorboard(record: Mapping[str, Any]) -> dict[str, float]:
  scalars = {k: v for k, v in record.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
  for layer, stats in record.get("layers", {}).items():
    scalars[f"layer_density/{layer}"] = stats["density"]
    if "kurtosis" in stats:
      scalars[f"layer_kurtosis/{layer}"] = stats["kurtosis"]
  return scalars


def format_record(record: Mapping[str, Any]) -> str:
  return (f"epoch {record['epoch']:4d}  step {record['step']:7d}  "
          f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}  "
          f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}  "
          f"density {record['density']:.4f} compression {record['compression']:.1f}x  "
          f"zero kernels {record['zero_kernels']}/{record['kernels']} "
          f"channels {record['zero_channels']}/{record['channels']}  "
          + (f"λ {record['l1']:.3g}  " if isinstance(record.get("l1"), float) else "")
          + f"({record['epoch_time_s']:.0f}s)")


class Reporter:
  """Writes records on the chief process (the others only take part in the writer's no-ops)."""

  def __init__(self, workdir: run_folder.PathLike, is_chief: bool):
    self.workdir, self.is_chief = run_folder.path(workdir), is_chief
    self.writer = metric_writers.create_default_writer(os.fspath(self.workdir),
                                                       just_logging=not is_chief)

  def write(self, record: Mapping[str, Any]) -> None:
    if self.is_chief:
      run_folder.append_record(self.workdir, record)
    self.writer.write_scalars(record["step"], scalars_for_tensorboard(record))
    self.writer.flush()
    if self.is_chief:
      print(format_record(record), flush=True)

  def final(self, record: Mapping[str, Any]) -> None:
    if self.is_chief:
      print(f"Final: test accuracy {record['test_accuracy']:.4f}, density "
            f"{record['density']:.4f} ({record['nonzeros']}/{record['total']} non-zeros), "
            f"compression {record['compression']:.1f}x", flush=True)

  def close(self) -> None:
    self.writer.close()
