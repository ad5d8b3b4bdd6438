"""semrec_jax: a pure-JAX stack for LLM-recommender hybrids with semantic IDs."""

__version__ = "0.1.0"
