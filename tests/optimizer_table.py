"""Every exported optimizer, as (name, factory, kwargs): the table the common checks run over."""

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

IDS = [name for name, _, _ in OPTIMIZERS]


def build(factory, kwargs):
  return factory(**kwargs)
