"""sparse_optax: compressed-sensing sparse training as composable Optax transforms.

Primitives (each usable alone inside any ``optax.chain``):

* :func:`scale_by_timescale_momentum` — momentum on a fixed time scale.
* :func:`dual_averaging` — the dual-averaging accumulator; ``center="params"``
  is the xRDA interpolation, ``center="initial"`` Xiao's RDA.
* :func:`log_l1_weights`, :func:`uniform_l1_weights` — l1 weights (adaptive
  log-l1: unstructured, kernel, channel, or :func:`tied` groups across leaves such as
  attention heads and MLP neurons, :func:`head_groups`, :func:`neuron_groups`).
* :func:`accumulated_threshold` — the dual-averaged threshold :math:`\\lambda B`.
* :func:`soft_threshold` — the proximal step; with ``sparsity=``, at the strength
  that leaves that fraction of zeros (:func:`target_state` reads it back).
* :func:`freeze_zeros` — zero weights stay zero.
* N:M sparsity (at most N non-zeros per group of M along a kernel's input): ``pattern=`` of
  the prox and of pruning; :func:`nm_mask`, :func:`nm_violations`, and :func:`nm_compress` /
  :func:`nm_decompress` to store it.

Baselines and other methods, same conventions: :func:`prune_by_magnitude` with
:func:`polynomial_sparsity` (Han; Zhu & Gupta), :func:`affine_scaling` and
:func:`scale_by_affine_scaling` (re-weighted l1/l2, FOCUSS), :func:`lobster`, and sparse
training from scratch: :func:`rigl`, :func:`set_` with uniform or :func:`erk_densities` layer
densities.

Named optimizers :func:`xrda`, :func:`rda`, :func:`prox_sgd` are chains of
them; :func:`sparsity_summary` and friends measure the result, and
:func:`to_compact` / :func:`from_compact` store it as BCOO where that is smaller.
"""

from sparse_optax._affine_scaling import (
    METHODS as AFFINE_SCALING_METHODS,
    AffineScalingGreedyState,
    AffineScalingState,
    affine_scaling,
    scale_by_affine_scaling,
)
from sparse_optax._alias import prox_sgd, rda, xrda
from sparse_optax._compact import (
    compact_matmul,
    compact_summary,
    from_compact,
    to_compact,
)
from sparse_optax._dynamic_sparse import (
    DISTRIBUTIONS,
    DynamicSparseState,
    erk_densities,
    layer_densities,
    rigl,
    set_,
)
from sparse_optax._dual_averaging import DualAveragingState, dual_averaging
from sparse_optax._lobster import LobsterState, lobster
from sparse_optax._masking import FreezeZerosState, freeze_zeros
from sparse_optax._metrics import (
    compression_ratio,
    count_nonzeros,
    density,
    group_sparsity,
    sparsity_summary,
)
from sparse_optax._nm import (
    nm_compress,
    nm_decompress,
    nm_mask,
    nm_violations,
)
from sparse_optax._momentum import (
    ScaleByTimescaleMomentumState,
    scale_by_timescale_momentum,
)
from sparse_optax._pruning import (
    SCOPES as PRUNING_SCOPES,
    PruneByMagnitudeState,
    polynomial_sparsity,
    prune_by_magnitude,
)
from sparse_optax._prox import (
    AccumulatedThresholdState,
    SoftThresholdState,
    SoftThresholdTargetState,
    accumulated_threshold,
    soft_threshold,
)
from sparse_optax._reweighting import (
    STRUCTURES,
    LogL1WeightsState,
    Tied,
    head_groups,
    log_l1_weights,
    neuron_groups,
    tied,
    uniform_l1_weights,
)
from sparse_optax._target import (
    SCOPES as TARGET_SCOPES,
    SparsityTargetState,
    target_state,
)
from sparse_optax._schedules import (
    cosine_averaging,
    cosine_decay,
    rda_averaging,
    rda_step_size,
)
from sparse_optax._types import Weighting

__version__ = "0.1.0"

__all__ = (
    "AFFINE_SCALING_METHODS",
    "AffineScalingGreedyState",
    "AccumulatedThresholdState",
    "AffineScalingState",
    "DISTRIBUTIONS",
    "DynamicSparseState",
    "LobsterState",
    "PRUNING_SCOPES",
    "PruneByMagnitudeState",
    "DualAveragingState",
    "FreezeZerosState",
    "LogL1WeightsState",
    "STRUCTURES",
    "ScaleByTimescaleMomentumState",
    "SoftThresholdState",
    "SoftThresholdTargetState",
    "SparsityTargetState",
    "TARGET_SCOPES",
    "Tied",
    "Weighting",
    "accumulated_threshold",
    "affine_scaling",
    "compact_matmul",
    "compact_summary",
    "compression_ratio",
    "cosine_averaging",
    "cosine_decay",
    "count_nonzeros",
    "density",
    "dual_averaging",
    "erk_densities",
    "freeze_zeros",
    "from_compact",
    "group_sparsity",
    "head_groups",
    "layer_densities",
    "lobster",
    "log_l1_weights",
    "nm_compress",
    "nm_decompress",
    "nm_mask",
    "nm_violations",
    "neuron_groups",
    "polynomial_sparsity",
    "prox_sgd",
    "prune_by_magnitude",
    "rda",
    "rda_averaging",
    "rda_step_size",
    "rigl",
    "scale_by_affine_scaling",
    "scale_by_timescale_momentum",
    "set_",
    "soft_threshold",
    "sparsity_summary",
    "target_state",
    "tied",
    "to_compact",
    "uniform_l1_weights",
    "xrda",
)
