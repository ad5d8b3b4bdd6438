"""The two RQ-VAE recipes (`config.ids.recipe`): the algorithmic choices, not the budget.

seed     Eugene Yan's recipe: k-means (random seeding) on the first batch, constant AdamW 3e-4,
         rotation trick, beta 0.25, nearest code at every level (items with identical embeddings
         always collide).
default  ours: greedy k-means++ on the encoded residuals of all training items, warmup + cosine
         schedule with gradient clipping, the same estimator, and a collision-free last level:
         within each prefix group the last codes are a minimum-distance one-to-one assignment
         (Hungarian), so items only share all L codes when a group outgrows K.
Both restart rarely used codes from random residuals of the current batch, on the schedule in
config.ids (`reset_every`, `usage_decay`, `reset_threshold`; semrec_jax/ids/train.py).
"""

import dataclasses

LAST_LEVELS = ("nearest", "unique")  # config.ids.last_level overrides a recipe's


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  init: str                 # 'first_batch' (k-means, random seeding) | 'all' (k-means++ on all)
  learning_rate: float
  schedule: str             # 'constant' | 'cosine' (linear warmup, cosine to 10%)
  warmup_fraction: float
  weight_decay: float
  clip_norm: float          # 0 disables clipping
  estimator: str            # 'rotation' | 'ste'
  beta: float
  last_level: str           # 'nearest' | 'unique'


RECIPES = {
    "seed": Recipe("seed", init="first_batch", learning_rate=3e-4, schedule="constant",
                   warmup_fraction=0.0, weight_decay=0.01, clip_norm=0.0, estimator="rotation",
                   beta=0.25, last_level="nearest"),
    "default": Recipe("default", init="all", learning_rate=1e-3, schedule="cosine",
                      warmup_fraction=0.05, weight_decay=1e-4, clip_norm=1.0,
                      estimator="rotation", beta=0.25, last_level="unique"),
}


def get(name: str) -> Recipe:
  if name not in RECIPES:
    raise ValueError(f"config.ids.recipe: unknown {name!r}; known: {sorted(RECIPES)}")
  return RECIPES[name]
