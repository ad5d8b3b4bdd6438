"""k-means in JAX: k-means++ (or random) seeding, then Lloyd iterations; used to seed codebooks."""

import functools
import math

import jax
import jax.numpy as jnp

from semrec_jax.ids.rqvae import nearest_code


def _kmeans_plus_plus(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
  """Greedy k-means++ seeding (as in scikit-learn).

  Each new centroid is the best of 2 + log(k) candidates drawn with probability proportional to
  their squared distance from the centroids so far: best = lowest total squared distance after.
  """
  n, trials = x.shape[0], 2 + int(math.log(k))
  first_key, loop_key = jax.random.split(key)
  first = x[jax.random.randint(first_key, (), 0, n)]
  centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
  nearest = jnp.sum((x - first) ** 2, axis=-1)

  def body(i, carry):
    centroids, nearest, key = carry
    key, sub = jax.random.split(key)
    total = jnp.sum(nearest)
    probs = jnp.where(total > 0, nearest / jnp.maximum(total, 1e-30), jnp.full((n,), 1.0 / n))
    candidates = x[jax.random.choice(sub, n, (trials,), p=probs)]  # [trials, d]
    distances = jnp.sum((x[None] - candidates[:, None]) ** 2, axis=-1)  # [trials, n]
    after = jnp.minimum(nearest[None], distances)
    best = jnp.argmin(jnp.sum(after, axis=-1))
    return centroids.at[i].set(candidates[best]), after[best], key

  centroids, _, _ = jax.lax.fori_loop(1, k, body, (centroids, nearest, loop_key))
  return centroids


@functools.partial(jax.jit, static_argnames=("k", "iterations", "init"))
def kmeans(key: jax.Array, x: jax.Array, k: int, iterations: int = 25,
           init: str = "kmeans++") -> tuple[jax.Array, jax.Array]:
  """Returns (centroids [k, d], assignment [n]). Empty clusters keep their previous centroid."""
  if init == "kmeans++":
    centroids = _kmeans_plus_plus(key, x, k)
  elif init == "random":
    centroids = x[jax.random.choice(key, x.shape[0], (k,), replace=x.shape[0] < k)]
  else:
    raise ValueError(f"unknown k-means init {init!r}")

  def step(centroids, _):
    assignment = nearest_code(x, centroids)
    sums = jax.ops.segment_sum(x, assignment, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), assignment, num_segments=k)
    updated = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centroids)
    return updated, None

  centroids, _ = jax.lax.scan(step, centroids, None, length=iterations)
  return centroids, nearest_code(x, centroids)
