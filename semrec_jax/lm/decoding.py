"""Decoding with the KV cache: trie-constrained beam search and sampling over semantic IDs, item
scoring by code log-probabilities, and text generation.

An item is written `<|sid_start|> c_0 .. c_{L-1} <|sid_end|>`. After the prompt and
`<|sid_start|>`, level l is scored against only its K code rows of the output table (a log-softmax
over those K logits), so an item's score is the sum over levels of log p(c_l | prompt, c_<l).
Only codes that continue a real item's prefix in the trie are allowed, so every result is a
catalog item, and distinct beams are distinct items.

Every call is one jitted program per (batch, bucketed prompt length): prompts are right-padded
to a few bucketed lengths, padding never enters the fixed-size cache (see Decoder.hidden).
"""

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from semrec_jax import parallel
from semrec_jax.ids.trie import Trie
from semrec_jax.models.decoder import Decoder, take_cache_rows

MIN_BUCKET = 16
BUCKET_STEP = 64  # above this, prompt lengths round up to multiples of it (not powers of two)
DENSE_LIMIT = 1 << 22  # trie levels with at most this many rows x K entries are dense tables
_NEG = -1e30  # the score of a forbidden code (finite, so sums stay finite)


def bucket(n: int) -> int:
  """Padded prompt length: a power of two up to BUCKET_STEP (at least MIN_BUCKET), then a multiple
  of BUCKET_STEP: few compiled programs, at most BUCKET_STEP - 1 padding tokens."""
  if n > BUCKET_STEP:
    return -(-n // BUCKET_STEP) * BUCKET_STEP
  return max(MIN_BUCKET, 1 << max(0, n - 1).bit_length())


@functools.partial(jax.tree_util.register_dataclass, data_fields=["tables"],
                   meta_fields=["fanout", "codebook_size"])
@dataclasses.dataclass
class DeviceTrie:
  """The trie on device: a dense [rows, K] child table for shallow levels, the CSR arrays
  (row_ptr, codes, children) with the level's largest fan-out for deep ones."""

  tables: tuple
  fanout: tuple  # 0 for a dense level
  codebook_size: int

  @classmethod
  def from_trie(cls, trie: Trie, dense_limit: int = DENSE_LIMIT) -> "DeviceTrie":
    tables, fanout = [], []
    for level in range(trie.levels):
      if trie.num_rows(level) * trie.codebook_size <= dense_limit:
        tables.append(jnp.asarray(trie.dense(level)))
        fanout.append(0)
      else:
        tables.append(tuple(jnp.asarray(a) for a in (trie.row_ptr[level], trie.codes[level],
                                                      trie.children[level])))
        fanout.append(max(1, trie.max_fanout(level)))
    return cls(tuple(tables), tuple(fanout), trie.codebook_size)

  @property
  def levels(self) -> int:
    return len(self.tables)

  def next_rows(self, level: int, rows: jax.Array) -> jax.Array:
    """rows [n] of `level` -> [n, K]: the child row (last level: item index) per code, or -1."""
    if not self.fanout[level]:
      return self.tables[level][rows]
    row_ptr, codes, children = self.tables[level]
    start = row_ptr[rows]
    slot = jnp.arange(self.fanout[level])
    valid = slot < (row_ptr[rows + 1] - start)[:, None]
    edge = jnp.minimum(start[:, None] + slot, codes.shape[0] - 1)
    code = jnp.where(valid, codes[edge], self.codebook_size)  # K is out of range: dropped
    out = jnp.full((rows.shape[0], self.codebook_size), -1, jnp.int32)
    return out.at[jnp.arange(rows.shape[0])[:, None], code].set(children[edge], mode="drop")


def _prefill(model: Decoder, tokens, lengths, cache_len: int):
  """Runs the right-padded prompts; returns the last real position's hidden state and the cache."""
  width = tokens.shape[1]
  segment_ids = (jnp.arange(width) < lengths[:, None]).astype(jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(width), tokens.shape) * segment_ids
  cache = model.init_cache(tokens.shape[0], cache_len)
  hidden, cache = model.hidden(tokens, positions, segment_ids, cache)
  return hidden[jnp.arange(tokens.shape[0]), lengths - 1], cache


def _step(model: Decoder, tokens, positions, cache):
  """One cached step for tokens [n] at positions [n]; returns hidden [n, D] and the cache."""
  hidden, cache = model.hidden(tokens[:, None], positions[:, None], jnp.ones_like(tokens[:, None]),
                               cache)
  return hidden[:, 0], cache


def _code_logprobs(model: Decoder, hidden, code_tokens):
  """log p over one level's K codes: [n, D] -> [n, K]."""
  return jax.nn.log_softmax(model.embedder.decode_subset(hidden, code_tokens), axis=-1)


def _top_p_filter(logits, top_p):
  """Keeps the smallest set of codes whose probability reaches top_p (the most likely always)."""
  probs = jax.nn.softmax(logits, axis=-1)
  sorted_probs = jnp.sort(probs, axis=-1)[..., ::-1]
  before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
  threshold = jnp.min(jnp.where(before < top_p, sorted_probs, 1.0), axis=-1, keepdims=True)
  return jnp.where(probs >= threshold, logits, _NEG)


def _walk(graphdef, state, trie: DeviceTrie, allowed, code_tokens, tokens, lengths, key, *,
          width: int, cache_len: int, temperature: float, top_p: float, mesh):
  """Constrained decoding of `width` items per prompt: beam search when temperature == 0, else
  `width` independent samples (temperature, top-p) among the allowed codes. `allowed`: per level,
  a bool mask over that level's children (Trie.allowed), restricting results to a subset."""
  with _mesh_context(mesh):
    model = nnx.merge(graphdef, state)
    batch, k = tokens.shape[0], trie.codebook_size
    hidden, cache = _prefill(model, tokens, lengths, cache_len)
    cache = take_cache_rows(cache, jnp.repeat(jnp.arange(batch), width))
    hidden = jnp.repeat(hidden, width, axis=0)
    rows = jnp.zeros((batch * width,), jnp.int32)
    # Beam search starts from one live beam per prompt (the others would duplicate it).
    first = (jnp.arange(batch * width) % width == 0) | (temperature > 0)
    scores = jnp.where(first, 0.0, _NEG).reshape(batch, width)
    positions = jnp.repeat(lengths, width)
    for level in range(trie.levels):
      logp = _code_logprobs(model, hidden, code_tokens[level])
      nxt = trie.next_rows(level, rows)
      ok = (nxt >= 0) & allowed[level][jnp.maximum(nxt, 0)]
      logp = jnp.where(ok, logp, _NEG).reshape(batch, width, k)
      if temperature > 0:
        key, sub = jax.random.split(key)
        logits = _top_p_filter(logp / temperature, top_p)
        code = jax.random.categorical(sub, logits).astype(jnp.int32)  # [batch, width]
        parent = jnp.broadcast_to(jnp.arange(width), (batch, width))
        scores = scores + jnp.take_along_axis(logp, code[..., None], axis=-1)[..., 0]
      else:
        total = (scores[..., None] + logp).reshape(batch, width * k)
        scores, flat = jax.lax.top_k(total, width)
        parent, code = flat // k, (flat % k).astype(jnp.int32)
      source = (jnp.arange(batch)[:, None] * width + parent).reshape(-1)
      rows = nxt.reshape(batch * width, k)[source, code.reshape(-1)]
      if level + 1 < trie.levels:
        cache = take_cache_rows(cache, source)
        hidden, cache = _step(model, code_tokens[level][code.reshape(-1)], positions, cache)
        positions = positions + 1
    items = jnp.where(scores > _NEG / 2, rows.reshape(batch, width), -1)
    return items, scores, cache["overflow"]


class CacheOverflow(RuntimeError):
  """A decoder wrote a token past its KV cache: its outputs are wrong (a bug in the sizing)."""


def check_cache(overflow, cache_len: int) -> None:
  """Raises CacheOverflow when a decoding call's cache flag (Decoder.init_cache) is set."""
  if not overflow.is_fully_addressable:  # a scalar, the same on every process: read this one's
    overflow = overflow.addressable_data(0)
  if bool(np.asarray(overflow)):
    raise CacheOverflow(f"KV cache of {cache_len} positions overflowed: a token was written past "
                        "its end and lost")


def _mesh_context(mesh):
  """Traces under the mesh so the model's activation sharding constraints apply."""
  if mesh is None:
    return contextlib.nullcontext()
  return jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def _score(graphdef, state, code_tokens, tokens, lengths, codes, *, cache_len: int, mesh):
  """Sum of code log-probabilities of candidate items codes [B, C, L] after each prompt."""
  with _mesh_context(mesh):
    model = nnx.merge(graphdef, state)
    batch, count, levels = codes.shape
    hidden, cache = _prefill(model, tokens, lengths, cache_len)
    cache = take_cache_rows(cache, jnp.repeat(jnp.arange(batch), count))
    flat = codes.reshape(batch * count, levels)
    # Teacher forcing: codes 0..L-2 enter the cache together; each hidden state scores the next.
    level_tokens = code_tokens[jnp.arange(levels - 1)[None], flat[:, :-1]]
    positions = jnp.repeat(lengths, count)[:, None] + jnp.arange(levels - 1)
    later, cache = model.hidden(level_tokens, positions, jnp.ones_like(level_tokens), cache)
    states = jnp.concatenate([jnp.repeat(hidden, count, axis=0)[:, None], later], axis=1)
    total = 0.0
    for level in range(levels):
      logp = _code_logprobs(model, states[:, level], code_tokens[level])
      total = total + jnp.take_along_axis(logp, flat[:, level:level + 1], axis=-1)[:, 0]
    return total.reshape(batch, count), cache["overflow"]


def _generate(graphdef, state, tokens, lengths, key, *, max_new: int, cache_len: int,
              temperature: float, mesh):
  """max_new tokens after each prompt: greedy when temperature == 0, else sampled."""
  with _mesh_context(mesh):
    model = nnx.merge(graphdef, state)
    hidden, cache = _prefill(model, tokens, lengths, cache_len)

    def pick(hidden, key):
      logits = model.embedder.decode(hidden)
      if temperature > 0:
        return jax.random.categorical(key, logits / temperature).astype(jnp.int32)
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def body(t, carry):
      out, hidden, cache, key = carry
      key, sub = jax.random.split(key)
      token = pick(hidden, sub)
      hidden, cache = _step(model, token, lengths + t, cache)
      return out.at[:, t].set(token), hidden, cache, key

    out = jnp.zeros((tokens.shape[0], max_new), jnp.int32)
    out, _, cache, _ = jax.lax.fori_loop(0, max_new, body, (out, hidden, cache, key))
    return out, cache["overflow"]


def _text_logprob(graphdef, state, tokens, lengths, starts, *, span: int, mesh):
  """Sum of log p(token) over positions starts..lengths-1 of right-padded rows [B, T]: how
  likely each row's continuation is after its prefix (teacher forcing, no cache)."""
  with _mesh_context(mesh):
    model = nnx.merge(graphdef, state)
    width = tokens.shape[1]
    segment_ids = (jnp.arange(width) < lengths[:, None]).astype(jnp.int32)
    hidden, _ = model.hidden(tokens, jnp.broadcast_to(jnp.arange(width), tokens.shape) *
                             segment_ids, segment_ids)
    at = jnp.minimum(starts[:, None] + jnp.arange(span), width - 1)  # predicted positions
    rows = jnp.arange(tokens.shape[0])[:, None]
    logp = jax.nn.log_softmax(model.embedder.decode(hidden[rows, at - 1]))
    picked = jnp.take_along_axis(logp, tokens[rows, at][..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(starts[:, None] + jnp.arange(span) < lengths[:, None], picked, 0.0),
                   axis=1)


_walk_jit = jax.jit(_walk, static_argnames=("graphdef", "width", "cache_len", "temperature",
                                           "top_p", "mesh"))
_score_jit = jax.jit(_score, static_argnames=("graphdef", "cache_len", "mesh"))
_text_logprob_jit = jax.jit(_text_logprob, static_argnames=("graphdef", "span", "mesh"))
_generate_jit = jax.jit(_generate, static_argnames=("graphdef", "max_new", "cache_len",
                                                   "temperature", "mesh"))


class SidDecoder:
  """A trained decoder ready to decode: its split state, the semantic-ID token ids per level and
  the trie on device. Prompts are token lists ([bos] + prompt, without <|sid_start|>)."""

  def __init__(self, model: Decoder, code_tokens: np.ndarray, sid_start: int, trie: Trie,
               mesh=None, batch_size: int = 16, dense_limit: int = DENSE_LIMIT):
    if code_tokens.shape != (trie.levels, trie.codebook_size):
      raise ValueError(f"code tokens {code_tokens.shape} do not match a trie of {trie.levels} "
                       f"levels x {trie.codebook_size} codes")
    self.graphdef, self.state = nnx.split(model)
    self.code_tokens = jnp.asarray(code_tokens, jnp.int32)
    self.sid_start, self.mesh, self.levels = sid_start, mesh, trie.levels
    self.trie = DeviceTrie.from_trie(trie, dense_limit)
    self._host_trie = trie
    self._everything = tuple(jnp.asarray(m) for m in trie.allowed(np.ones(self.num_items, bool)))
    share = parallel.data_parallel_size(mesh) if mesh is not None else 1
    self.batch_size = -(-batch_size // share) * share  # rows per call split over the mesh

  def _batches(self, prompts: list[list[int]], extra: int):
    """(start, tokens, lengths, cache_len) per batch of right-padded prompts (all full-size
    batches: the last one is filled with copies of the first prompt)."""
    for start in range(0, len(prompts), self.batch_size):
      chunk = list(prompts[start:start + self.batch_size])
      chunk += [chunk[0]] * (self.batch_size - len(chunk))
      width = bucket(max(len(p) for p in chunk))
      tokens = np.zeros((len(chunk), width), np.int32)
      for row, p in enumerate(chunk):
        tokens[row, :len(p)] = p
      lengths = np.asarray([len(p) for p in chunk], np.int32)
      yield start, self._put(tokens), self._put(lengths), width + extra

  def _put(self, array: np.ndarray):
    if self.mesh is None:
      return jnp.asarray(array)
    index, count = parallel.input_shard(self.mesh)  # every process holds the whole array
    rows = len(array) // count
    return parallel.global_batch(array[index * rows:(index + 1) * rows], self.mesh)

  @staticmethod
  def _fetch(x) -> np.ndarray:
    if jax.process_count() > 1 and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  @property
  def num_items(self) -> int:
    return len(self._host_trie.children[-1])

  def _with_start(self, prompts):
    return [list(p) + [self.sid_start] for p in prompts]

  def items(self, prompts: list[list[int]], width: int, temperature: float = 0.0,
            top_p: float = 1.0, seed: int = 0,
            allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Items [n, width] (index, or -1 where fewer items qualify) and their scores, best first for
    beam search (temperature 0); with temperature > 0, `width` samples per prompt. `allowed`: a
    bool mask [items] restricting the results to a subset of the catalog (default: all items);
    any subset runs the same compiled program."""
    if not len(prompts):  # e.g. a preference step whose prompts all went to other tasks
      return np.zeros((0, width), np.int32), np.zeros((0, width), np.float32)
    if allowed is None:
      masks = self._everything
    else:
      if np.shape(allowed) != (self.num_items,):
        raise ValueError(f"allowed has shape {np.shape(allowed)}; expected ({self.num_items},)")
      masks = tuple(jnp.asarray(m) for m in self._host_trie.allowed(allowed))
    prompts = self._with_start(prompts)
    items, scores = [], []
    key = jax.random.key(seed)
    for start, tokens, lengths, cache_len in self._batches(prompts, self.levels):
      i, s, overflow = _walk_jit(self.graphdef, self.state, self.trie, masks, self.code_tokens,
                                 tokens, lengths, jax.random.fold_in(key, start), width=width,
                                 cache_len=cache_len, temperature=float(temperature),
                                 top_p=float(top_p), mesh=self.mesh)
      check_cache(overflow, cache_len)
      items.append(self._fetch(i))
      scores.append(self._fetch(s))
    n = len(prompts)
    return np.concatenate(items)[:n], np.concatenate(scores)[:n]

  def score(self, prompts: list[list[int]], codes: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Log-probabilities [n, C] of candidate items codes [n, C, L] after each prompt, `chunk`
    candidates per call (the cache holds batch x chunk rows)."""
    if not len(prompts):  # nothing to batch (every method answers an empty list in kind)
      return np.zeros((0, np.shape(codes)[1]), np.float32)
    prompts, codes = self._with_start(prompts), np.asarray(codes, np.int32)
    count = codes.shape[1]
    chunk = min(chunk, count)
    pad = -count % chunk
    codes = np.concatenate([codes, np.repeat(codes[:, :1], pad, axis=1)], axis=1)
    out = []
    for start, tokens, lengths, cache_len in self._batches(prompts, self.levels):
      rows = codes[start:start + self.batch_size]
      rows = np.concatenate([rows, np.repeat(rows[:1], self.batch_size - len(rows), axis=0)])
      parts = []
      for c in range(0, codes.shape[1], chunk):
        scores, overflow = _score_jit(self.graphdef, self.state, self.code_tokens, tokens,
                                      lengths, self._put(rows[:, c:c + chunk]),
                                      cache_len=cache_len, mesh=self.mesh)
        check_cache(overflow, cache_len)
        parts.append(self._fetch(scores))
      out.append(np.concatenate(parts, axis=1))
    return np.concatenate(out)[:len(prompts), :count]

  def text_logprob(self, prompt: list[int], continuations: list[list[int]]) -> np.ndarray:
    """log p(continuation | prompt) [n] for each token list of `continuations` (a choice among a
    few candidate texts, e.g. the reasons an explanation may give)."""
    if not len(continuations):
      return np.zeros((0,), np.float32)
    span = bucket(max(len(c) for c in continuations))
    rows = [list(prompt) + list(c) for c in continuations]
    starts = np.full(self.batch_size, len(prompt), np.int32)
    out = []
    for _, tokens, lengths, _ in self._batches(rows, 0):
      out.append(self._fetch(_text_logprob_jit(self.graphdef, self.state, tokens, lengths,
                                               self._put(starts), span=span, mesh=self.mesh)))
    return np.concatenate(out)[:len(rows)]

  def generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
               seed: int = 0) -> np.ndarray:
    """[n, max_new_tokens] continuations of full prompts (no <|sid_start|> added)."""
    if not len(prompts):
      return np.zeros((0, max_new_tokens), np.int32)
    out, key = [], jax.random.key(seed)
    for start, tokens, lengths, cache_len in self._batches(prompts, max_new_tokens):
      tokens_out, overflow = _generate_jit(
          self.graphdef, self.state, tokens, lengths, jax.random.fold_in(key, start),
          max_new=max_new_tokens, cache_len=cache_len, temperature=float(temperature),
          mesh=self.mesh)
      check_cache(overflow, cache_len)
      out.append(self._fetch(tokens_out))
    return np.concatenate(out)[:len(prompts)]


def greedy(model: Decoder, prompt: list[int], max_new_tokens: int,
           eos_id: int | None = None) -> list[int]:
  """The greedy continuation of one prompt (up to and including eos_id)."""
  graphdef, state = nnx.split(model)
  width = bucket(len(prompt))
  tokens = np.zeros((1, width), np.int32)
  tokens[0, :len(prompt)] = prompt
  out, overflow = _generate_jit(graphdef, state, jnp.asarray(tokens),
                                jnp.asarray([len(prompt)], jnp.int32), jax.random.key(0),
                                max_new=max_new_tokens, cache_len=width + max_new_tokens,
                                temperature=0.0, mesh=None)
  check_cache(overflow, width + max_new_tokens)
  out = np.asarray(out)[0].tolist()
  return out[:out.index(eos_id) + 1] if eos_id in out else out
