"""semrec_jax: a pure-JAX stack for LLM-recommender hybrids with semantic IDs.

`semrec_jax.Recommender.from_workdir(W)` gives the Python API of a trained run (semrec_jax/chat/).
"""

__version__ = "0.1.0"


def __getattr__(name):
  if name == "Recommender":  # imported on first use: `import semrec_jax` stays light
    from semrec_jax.chat import Recommender
    return Recommender
  raise AttributeError(f"module 'semrec_jax' has no attribute {name!r}")
