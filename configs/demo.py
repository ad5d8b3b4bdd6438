"""Default run: the bundled Games sample (2,000 items), small enough for a laptop CPU."""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.ids.steps = 150  # 2,000 items: batch 1,900, about 15 s of RQ-VAE training on 2 cores
  return config
