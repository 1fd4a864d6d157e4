"""Every exported optimizer, as (name, factory, kwargs): the table the common checks run over.

Transforms that need a base optimizer enter as small factories of their usual chain.
`EXACT_ZEROS` names the ones whose own update produces exact zeros."""

import optax

import sparse_optax as so

TOTAL = 200


def _xrda(structure):
  return (
      f"xrda_{structure}",
      so.xrda,
      dict(learning_rate=so.cosine_decay(0.3, TOTAL), averaging=so.cosine_averaging(TOTAL),
           l1=1e-3, momentum_timescale=2.0, maximum_factor=20.0, weight_decay=1e-4,
           structure=structure),
  )


OPTIMIZERS = [
    *(_xrda(s) for s in so.STRUCTURES),
    ("xrda_const", so.xrda,
     dict(learning_rate=0.05, averaging=0.9, l1=1e-3, momentum_timescale=0.5, beta=0.1)),
    ("rda", so.rda, dict(gamma=0.5, l1=2e-2)),
    ("prox_sgd", so.prox_sgd, dict(learning_rate=0.05, l1=1e-2)),
    ("prox_sgd_momentum", so.prox_sgd,
     dict(learning_rate=optax.cosine_decay_schedule(0.05, TOTAL), l1=1e-2, momentum=0.9,
          weight_decay=1e-4)),
]



def gmp(learning_rate, final_sparsity):
  return optax.chain(
      optax.sgd(learning_rate, momentum=0.9),
      so.prune_by_magnitude(so.polynomial_sparsity(final_sparsity, 0, TOTAL // 2),
                            end_step=TOTAL // 2, frequency=10))


def affine_scaling(learning_rate, tau):
  return optax.chain(so.scale_by_affine_scaling("l1", tau=tau, period=20),
                     optax.sgd(learning_rate))


def lobster_sgd(learning_rate, strength):
  return so.lobster(optax.sgd(learning_rate), strength)


OPTIMIZERS += [
    ("gmp", gmp, dict(learning_rate=0.05, final_sparsity=0.5)),
    ("affine_scaling", affine_scaling, dict(learning_rate=0.1, tau=1.0)),
    ("lobster", lobster_sgd, dict(learning_rate=0.1, strength=1e-3)),
]

IDS = [name for name, _, _ in OPTIMIZERS]
EXACT_ZEROS = {name for name in IDS if name not in ("affine_scaling", "lobster")}


def build(factory, kwargs):
  return factory(**kwargs)
