"""Default run: the bundled Games sample (2,000 items), small enough for a laptop CPU."""

from semrec_jax import defaults


def get_config():
  return defaults.base_config()
