"""Constrained decoding on a tiny random decoder: beam search against brute-force scoring of every
catalog item, trie validity, sampling, sparse trie levels, sharding and compile counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semrec_jax import parallel
from semrec_jax.ids import trie as trie_lib
from semrec_jax.lm import decoding
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder

LEVELS, K, BASE = 3, 8, 200
SID_START = BASE + LEVELS * K


@pytest.fixture(scope="module")
def setup():
  config = configs.get("tiny", vocab_size=BASE, num_new_tokens=LEVELS * K + 1, num_layers=2,
                       sliding_window=4)
  model = Decoder(config, nnx.Rngs(0))
  rng = np.random.default_rng(0)
  ids = np.unique(rng.integers(0, K, (150, LEVELS)), axis=0)
  ids = ids[rng.permutation(len(ids))]
  code_tokens = BASE + np.arange(LEVELS * K).reshape(LEVELS, K)  # new rows: the SID tokens
  prompts = [list(rng.integers(1, BASE, n)) for n in (3, 11, 7, 20, 1)]
  return model, ids, trie_lib.build(ids, K), code_tokens, prompts


_forward = nnx.jit(lambda model, tokens: model(tokens))


def brute_force(model, prompt, ids, code_tokens):
  """Every item's sum of per-level log-probs, from full forward passes (no cache)."""
  tokens = np.concatenate([np.broadcast_to(prompt + [SID_START], (len(ids), len(prompt) + 1)),
                           code_tokens[np.arange(LEVELS), ids]], axis=1)
  logits = np.asarray(_forward(model, jnp.asarray(tokens)))
  total = np.zeros(len(ids))
  for level in range(LEVELS):
    level_logits = logits[:, len(prompt) + level, code_tokens[level]]
    logp = level_logits - np.log(np.exp(level_logits - level_logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - level_logits.max(-1, keepdims=True)
    total += logp[np.arange(len(ids)), ids[:, level]]
  return total


def test_beam_search_equals_brute_force(setup):
  model, ids, trie, code_tokens, prompts = setup
  # A beam as wide as the widest trie level keeps every prefix: the search is then exact.
  width = max(trie.num_rows(level) for level in range(LEVELS))
  dec = decoding.SidDecoder(model, code_tokens, SID_START, trie, batch_size=2)
  items, scores = dec.items(prompts, width)
  assert items.shape == (len(prompts), width)
  for p, prompt in enumerate(prompts):
    reference = brute_force(model, prompt, ids, code_tokens)
    top = np.argsort(-reference)[:10]
    assert items[p, :10].tolist() == top.tolist()
    np.testing.assert_allclose(scores[p, :10], reference[top], atol=1e-4)
  # The cached teacher-forced scorer gives the same numbers for any candidates.
  candidates = np.stack([ids[[0, 5, 9]]] * len(prompts))
  np.testing.assert_allclose(
      dec.score(prompts, candidates),
      [brute_force(model, p, ids[[0, 5, 9]], code_tokens) for p in prompts], atol=1e-4)


def test_narrow_beams_are_valid_distinct_items(setup):
  model, ids, trie, code_tokens, prompts = setup
  dec = decoding.SidDecoder(model, code_tokens, SID_START, trie, batch_size=4)
  items, scores = dec.items(prompts, 5)
  for p, prompt in enumerate(prompts):
    assert len(set(items[p])) == 5 and (items[p] >= 0).all()
    assert (np.diff(scores[p]) <= 1e-6).all()
    np.testing.assert_allclose(scores[p], brute_force(model, prompt, ids[items[p]], code_tokens),
                               atol=1e-4)


def test_no_prompts_give_empty_results_of_the_right_shape(setup):
  """A caller with nothing to ask (a preference step whose prompts all went to another task)
  gets empty arrays shaped like a full answer, from every method."""
  model, ids, trie, code_tokens, _ = setup
  dec = decoding.SidDecoder(model, code_tokens, SID_START, trie, batch_size=4)
  items, scores = dec.items([], 5)
  assert (items.shape, items.dtype, scores.shape) == ((0, 5), np.int32, (0, 5))
  codes = np.zeros((0, 3, trie.levels), np.int32)
  assert dec.score([], codes).shape == (0, 3)
  assert dec.text_logprob([1, 2], []).shape == (0,)
  generated = dec.generate([], 4)
  assert (generated.shape, generated.dtype) == ((0, 4), np.int32)


def test_beam_search_over_a_subset_equals_brute_force_on_it(setup):
  model, ids, trie, code_tokens, prompts = setup
  subset = np.zeros(len(ids), bool)
  subset[[1, 4, 7, 8, 11]] = True  # five items; the beam is wider, so the rest come back as -1
  masks = trie.allowed(subset)
  assert masks[-1].tolist() == subset.tolist()
  assert masks[0].sum() == len({tuple(r) for r in ids[subset, :1]})
  for dense_limit in (decoding.DENSE_LIMIT, K):  # dense and sparse trie levels
    dec = decoding.SidDecoder(model, code_tokens, SID_START, trie, batch_size=2,
                              dense_limit=dense_limit)
    width = max(trie.num_rows(level) for level in range(LEVELS))
    items, scores = dec.items(prompts, width, allowed=subset)
    for p, prompt in enumerate(prompts):
      reference = brute_force(model, prompt, ids, code_tokens)
      top = [int(i) for i in np.argsort(-reference) if subset[i]]
      assert items[p, :5].tolist() == top and (items[p, 5:] == -1).all()
      np.testing.assert_allclose(scores[p, :5], reference[top], atol=1e-4)
  with pytest.raises(ValueError, match="allowed has shape"):
    dec.items(prompts, 4, allowed=subset[:3])


def test_sparse_trie_levels_decode_the_same(setup):
  model, _, trie, code_tokens, prompts = setup
  dense = decoding.SidDecoder(model, code_tokens, SID_START, trie)
  sparse = decoding.SidDecoder(model, code_tokens, SID_START, trie, dense_limit=K)
  assert dense.trie.fanout == (0, 0, 0) and sparse.trie.fanout[0] == 0
  assert all(f > 0 for f in sparse.trie.fanout[1:])
  a, b = dense.items(prompts, 6), sparse.items(prompts, 6)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_allclose(a[1], b[1], atol=1e-5)


def test_sampling_stays_in_the_catalog(setup):
  model, ids, trie, code_tokens, prompts = setup
  dec = decoding.SidDecoder(model, code_tokens, SID_START, trie)
  items, scores = dec.items(prompts, 16, temperature=1.0, top_p=0.9, seed=3)
  assert (items >= 0).all() and (items < len(ids)).all() and np.isfinite(scores).all()
  again, _ = dec.items(prompts, 16, temperature=1.0, top_p=0.9, seed=3)
  np.testing.assert_array_equal(items, again)
  # top_p close to 0 keeps only the most likely code per level: the beam's best item
  greedy, _ = dec.items(prompts, 4, temperature=1.0, top_p=1e-6, seed=1)
  best, _ = dec.items(prompts, 1)
  np.testing.assert_array_equal(greedy, np.repeat(best, 4, axis=1))


def test_sharded_decoding_matches_one_device_and_compiles_once_per_bucket(setup):
  model, _, trie, code_tokens, prompts = setup
  single = decoding.SidDecoder(model, code_tokens, SID_START, trie, batch_size=8)
  mesh = parallel.make_mesh(parallel.mesh_config(data=4, fsdp=2))
  sharded_model = parallel.shard_model(Decoder(model.config, nnx.Rngs(0)), mesh)
  sharded = decoding.SidDecoder(sharded_model, code_tokens, SID_START, trie, mesh=mesh,
                                batch_size=8)
  a, b = single.items(prompts, 6), sharded.items(prompts, 6)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_allclose(a[1], b[1], atol=1e-4)
  before = decoding._walk_jit._cache_size()  # pylint: disable=protected-access
  sharded.items([p[::-1] for p in prompts], 6)  # other prompts, same bucket: no new program
  assert decoding._walk_jit._cache_size() == before  # pylint: disable=protected-access


def test_greedy_generation_matches_step_by_step_argmax(setup):
  model, _, _, _, prompts = setup
  out = decoding.greedy(model, prompts[1], 6)
  tokens = list(prompts[1])
  for _ in range(6):
    tokens.append(int(np.argmax(np.asarray(_forward(model, jnp.asarray([tokens])))[0, -1])))
  assert out == tokens[len(prompts[1]):]
