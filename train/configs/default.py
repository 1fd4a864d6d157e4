"""Defaults shared by every training config; the other configs override a few fields.

The returned ConfigDict is locked: a config file (or a ``--config.key=value`` flag)
that sets a key which does not exist here raises an error instead of being ignored.

Run::

  python -m train.main --config=train/configs/default.py --workdir=/tmp/sparse_default
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """Caffe LeNet-5 on MNIST with xRDA; see the other configs for the published setups."""
  config = ml_collections.ConfigDict()

  # Model (models.get_model) and its initialisation (as Siegel, Chen & Xu and He et al. initialise).
  config.model = "lenet5"
  config.init = "normal"  # "normal": He conv / N(0, 0.01²) linear; "uniform": U(±sqrt(3/fan_in))
  config.init_scale = 1.0  # factor on every kernel draw (RDA's scaled init)

  # Data (train/input_pipeline.py).
  config.dataset = "mnist"
  config.data_dir = config_dict.placeholder(str)  # TFDS data dir; None: TFDS's default
  config.prepare_data = True  # build the TFDS data from local raw files when offline
  config.train_split = "train"
  config.eval_split = "test"
  # Held out of train_split for methods that tune on it (LOBSTER), e.g. train "train[:54000]"
  # and validation "train[54000:]"; None: no validation evaluation.
  config.validation_split = config_dict.placeholder(str)
  config.batch_size = 128  # global, over all devices and hosts
  config.eval_batch_size = 1000

  # Optimizer: "xrda", "rda", "prox_sgd", "sgd" (dense baseline), "adamw" (the Transformers'
  # dense baseline), "affine_scaling", "lobster", "rigl" or "set"; see train/methods.py.
  config.optimizer = "xrda"
  config.num_epochs = 5
  config.learning_rate = 0.5  # s_0 (xrda, prox_sgd, sgd, adamw)
  config.lr_schedule = "cosine"  # "cosine": s = s_0 (1 + cos(π (n+1)/N)) / 2; or "constant"
  # Steps of linear warmup from 0 before lr_schedule (which then spans the steps left); 0: none.
  config.warmup_steps = 0
  config.averaging = "cosine"  # xrda α_n: "cosine" α = (1 − cos(π (n+1)/N)) / 2, "zero", "one"
  config.l1 = 1e-6  # λ (xrda, rda, prox_sgd); not used when l1_sparsity is set
  # Or ask xrda, rda, prox_sgd for a sparsity: the fraction of the l1-penalised weights that are
  # exactly zero, with λ found at every step (sparse_optax.soft_threshold's target). Held from
  # l1_sparsity_begin_epoch, or ramped to it (cubic) when l1_sparsity_end_epoch is later.
  config.l1_sparsity = config_dict.placeholder(float)
  config.l1_sparsity_begin_epoch = 0
  config.l1_sparsity_end_epoch = 0
  config.l1_sparsity_scope = "global"  # "global" (the l1 weights decide), "layer" or "erk"
  # Steps between exact solves of λ (31 passes of a count); between them λ follows the params'
  # density by feedback (a solve at once where the target moves or the count strays by 25%).
  # 1: every step (exact, costly); 0: solve once, then feedback only (docs: the sparsity target).
  config.l1_solve_every = 1000
  config.momentum_timescale = 9.5  # T (xrda)
  config.magnitude_timescale = config_dict.placeholder(float)  # T_b (xrda); None: T
  config.maximum_factor = 500.0  # F (xrda): log-l1 weights range over [1, F]
  # xrda: "unstructured", "kernel", "channel", or "groups" (a Transformer's attention heads and
  # MLP neurons, each a group tied across its leaves).
  config.structure = "unstructured"
  config.accumulator_dtype = "float32"  # xrda's moving averages v, r: "float32" or "bfloat16"
  config.weight_decay = 5e-4  # coupled L2 on every parameter (adamw: decoupled, on kernels
  # and embeddings)
  config.momentum = 0.9  # sgd, prox_sgd (0: none)
  config.nesterov = False  # sgd, prox_sgd
  config.rda_gamma = 1.0  # γ (rda): step 1/(γ sqrt n)
  config.l1_weights = "log"  # xrda: "log" (adaptive log-l1) or "uniform" (plain l1 ablation)
  # Adaptive sparse retraining: from this epoch on, weights that are zero stay zero.
  config.freeze_zeros_epoch = config_dict.placeholder(int)
  # N:M sparsity, e.g. "2:4" (NVIDIA's sparse tensor cores): at most N non-zeros in every group
  # of M consecutive weights along each kernel's input dimension, held by the prox of xrda, rda
  # and prox_sgd and by pruning ("once" or "gradual"), checked and stored compressed by
  # train.export. None: no pattern. Leaves whose input size is not a multiple of M stay out
  # (train.methods.nm_pattern_axes).
  config.nm_pattern = config_dict.placeholder(str)

  # Magnitude pruning appended to any optimizer: "none", "once" (Han et al.: prune at
  # pruning_begin_epoch, then fine-tune with the mask) or "gradual" (Zhu & Gupta: cubic
  # schedule from pruning_begin_epoch to pruning_end_epoch, every pruning_frequency steps).
  config.pruning = "none"
  config.pruning_sparsity = 0.9  # final fraction of weights (ndim >= 2) pruned
  config.pruning_scope = "layer"  # "layer", "global" or "erk"
  config.pruning_begin_epoch = 0
  config.pruning_end_epoch = 0
  config.pruning_frequency = 100  # steps between gradual pruning steps

  # RigL / SET (sparse from scratch, Evci et al. 2020): SGD as the dense baseline with a fixed share
  # of each layer active, dst_drop_fraction of it moved (cosine decay) every dst_update_steps
  # until dst_end_fraction of training. "uniform": every layer at dst_sparsity but the first,
  # kept dense (as RigL); "erk": Erdős–Rényi-Kernel densities, dst_sparsity overall.
  config.dst_sparsity = 0.9
  config.dst_distribution = "uniform"
  config.dst_update_steps = 100
  config.dst_end_fraction = 0.75
  config.dst_drop_fraction = 0.3

  # Affine scaling (Fedorov & Rao, 2018): θ = q ⊙ ω, SGD on q, ω refreshed every affine_period_epochs.
  # affine_greedy: q carries over a refresh, so θ jumps to q ⊙ ω_new (the paper's greedy
  # initialiser, all of its Table 1); False: θ carries over (SGD preconditioned by ω²).
  config.affine_method = "l1"  # "l1", "l2" or "focuss"
  config.affine_tau = 1e-2
  config.affine_p = 0.5  # FOCUSS exponent
  config.affine_period_epochs = 1
  config.affine_greedy = False
  config.affine_leafwise = False  # greedy only: one layer's ω per refresh, in params order
  config.affine_iterations = config_dict.placeholder(int)  # greedy only: refreshes; None: all

  # LOBSTER (Tartaglione et al., 2020): shrinkage λ after every SGD step; prune when the validation loss
  # has not improved by 1% for lobster_patience epochs (PWE), with a worsening tolerance TWT.
  config.lobster_strength = 1e-4
  config.lobster_patience = 20
  config.lobster_tolerance = 0.05

  # Run.
  config.seed = 0
  # Start from the params (and BatchNorm statistics) of another run's latest checkpoint, e.g.
  # a trained dense model to sparsify: the workdir of a run of the same model and dataset.
  config.init_from = config_dict.placeholder(str)
  config.max_checkpoints_to_keep = 2
  config.checkpoint_every_steps = 0  # also every this many steps; 0: at epoch ends only
  config.sharding = "replicated"  # "fsdp": params and optimizer state split over the devices
  # Several processes (train/distributed.py): a coordinator's host:port, the process count and
  # this process's id (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID); or
  # distributed=True alone under a cluster manager JAX detects (SLURM, TPU pods, ...).
  config.distributed = False
  config.coordinator_address = config_dict.placeholder(str)
  config.num_processes = config_dict.placeholder(int)
  config.process_id = config_dict.placeholder(int)
  config.progress_bar = True  # tqdm bar when stdout is a terminal

  config.lock()
  return config


def sgd_baseline(config: ml_collections.ConfigDict, learning_rate: float = 0.1
                 ) -> ml_collections.ConfigDict:
  """The dense baseline of a sparse config: same model, data and epochs; SGD with
  momentum 0.9, weight decay 5e-4 and a cosine learning rate (no l1)."""
  config.optimizer = "sgd"
  config.learning_rate = learning_rate
  config.lr_schedule = "cosine"
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.l1 = 0.0
  return config
