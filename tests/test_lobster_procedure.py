"""LOBSTER's plateau detection and threshold bisection on cases computed by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from train import lobster


def test_plateau_after_patience_epochs_without_one_percent_gain():
  d = lobster.PlateauDetector(patience=3, tolerance=0.01)
  losses = [1.0, 0.9, 0.895, 0.894, 0.893]  # gains after 0.9 are < 1%
  assert [d.update(x) for x in losses] == [False, False, False, False, True]
  d.reset()
  assert not d.update(0.5)
  with pytest.raises(ValueError, match="patience must be >= 1"):
    lobster.PlateauDetector(patience=0)


def test_bisection_finds_largest_threshold_within_tolerance():
  params = {"w": jnp.array([[0.1, 0.2, 0.3, 0.4, 5.0]]), "b": jnp.array([0.05])}

  def val_loss(p):  # loss grows with the pruned magnitude
    return 1.0 + float(jnp.sum(params["w"] - p["w"]))

  # TWT 0.35 allows pruning 0.1 + 0.2 (loss 1.3) but not also 0.3 (1.6)
  t, pruned, info = lobster.bisect_threshold(params, val_loss, 0.35, iterations=30)
  assert 0.2 < t < 0.31  # in float32 the threshold still keeps 0.3 (checked below)
  np.testing.assert_allclose(pruned["w"], [[0, 0, 0.3, 0.4, 5.0]], rtol=1e-6)
  assert float(pruned["b"][0]) == pytest.approx(0.05)  # by default only kernels are pruned
  assert info["loss_before"] == 1.0 and info["loss_after"] == pytest.approx(1.3)


def test_zero_tolerance_prunes_only_what_costs_nothing():
  params = {"w": jnp.array([[0.0, 0.0, 1.0, 2.0]])}
  t, pruned, _ = lobster.bisect_threshold(
      params, lambda p: 1.0 + float(jnp.sum(jnp.abs(params["w"] - p["w"]))), 0.0)
  assert t <= 1.0
  np.testing.assert_array_equal(pruned["w"], params["w"])


def test_an_equal_loss_is_no_improvement():
  # With zero tolerance a flat validation loss is a plateau; were "equal" an improvement, the
  # pruning phase would never start on a loss that stopped moving.
  detector = lobster.PlateauDetector(patience=2, tolerance=0.0)
  assert [detector.update(1.0) for _ in range(3)] == [False, False, True]
  detector = lobster.PlateauDetector(patience=1, tolerance=0.5)
  detector.update(1.0)
  assert detector.update(0.5)  # exactly the tolerance: not a gain of more than 50%


def test_tolerance_must_lie_in_zero_one():
  for bad in (-0.1, 1.0):
    with pytest.raises(ValueError, match=r"tolerance must lie in \[0, 1\)"):
      lobster.PlateauDetector(patience=1, tolerance=bad)


def test_the_mask_chooses_what_is_pruned():
  params = {"fc": {"kernel": jnp.array([[0.1, 2.0]]), "bias": jnp.array([0.05, 3.0])},
            "bn": {"scale": jnp.array([0.01, 1.0])}}
  from train import methods
  from train.configs import default
  pruned = lobster.prune_below(params, 0.5, mask=methods.not_normalization)
  np.testing.assert_array_equal(pruned["fc"]["kernel"], [[0.0, 2.0]])
  np.testing.assert_array_equal(pruned["fc"]["bias"], [0.0, 3.0])  # shrunk, so pruned
  np.testing.assert_array_equal(pruned["bn"]["scale"], params["bn"]["scale"])  # neither
  # The loop's LOBSTER prunes with the mask its optimizer shrinks with.
  callback = methods.get_method("lobster").callback(default.get_config())
  assert callback.mask is methods.not_normalization
