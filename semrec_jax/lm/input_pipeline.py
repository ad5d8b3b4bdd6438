"""The LM input pipeline: per-task sources -> shuffle/repeat -> this process's slice -> weighted
mixture -> tokenize with a loss mask on the answer -> first-fit packing -> fixed-shape batches.

Each packed row holds whole examples with `segment_ids` (1, 2, ... per example, 0 = padding) and
`positions` restarting at 0 per example, so attention never crosses examples. Iterators are grain
DatasetIterators: `get_state()` goes into every checkpoint and `set_state()` resumes exactly.
"""

import threading

import grain
import jax
import numpy as np
from absl import flags

from semrec_jax.lm.tokenizer import Tokenizer

# The arrays of every batch, each [rows, seq_len] int32.
BATCH_KEYS = ("tokens", "mask", "segment_ids", "positions")


def tokenize(example: dict, tokenizer: Tokenizer, max_len: int) -> dict:
  """[bos] prompt answer [eos] as int32 tokens; mask is 1 on answer and eos tokens, and, for an
  example marked `history_loss`, on the codes and <|sid_end|> of every item written in the prompt
  (each history item is then a next-item target given the items before it, as in SASRec).

  Nothing is cut here: the task builders drop a long history's oldest items and cut long titles
  (fitting.Budget), and the lm stage checks before training that every example fits (`longest`);
  one that still does not fit max_len is an error, not a prompt missing its instruction.
  """
  prompt, answer = _ids(example, tokenizer)
  if len(prompt) + len(answer) + 1 > max_len:
    raise ValueError(_too_long(example, len(prompt), len(answer), max_len))
  tokens = np.asarray([tokenizer.bos_id] + prompt + answer, np.int32)
  mask = np.zeros(len(tokens), np.int32)
  mask[len(tokens) - len(answer):] = 1
  if example.get("history_loss"):
    start, end = tokenizer.sid_start_id, tokenizer.sid_end_id
    inside = False  # every item is whole (the builders drop whole items): it opens with a start
    for i in range(1, len(prompt) + 1):
      if inside:
        mask[i] = 1
      inside = (inside or tokens[i] == start) and tokens[i] != end
  return {"tokens": tokens, "mask": mask}


def _ids(example: dict, tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
  """(prompt, answer + eos) token ids of an example; with bos, the whole example."""
  return (tokenizer.prompt_ids(example["prompt"]),
          tokenizer.encode(example["answer"]) + [tokenizer.eos_id])


def longest(sources: dict[str, grain.MapDataset], tokenizer: Tokenizer) -> tuple[int, dict]:
  """(tokens, example) of the longest example the sources can give, measured before training: a
  source's `shortest` examples where its builder has them (tasks._shortest: its examples only
  lose history items down to those), else every example it holds (None, a skipped one, is
  left out)."""
  best = (0, {})
  for source in sources.values():
    shortest = getattr(source, "shortest", None)
    examples = shortest if shortest is not None else (source[i] for i in range(len(source)))
    for example in examples:
      if example is not None:
        prompt, answer = _ids(example, tokenizer)
        best = max(best, (1 + len(prompt) + len(answer), example), key=lambda b: b[0])
  return best


def _too_long(example: dict, prompt: int, answer: int, max_len: int) -> str:
  user = f" (user {example['user']})" if "user" in example else ""
  return (f"{example.get('task', 'an')} example{user} needs 1 + {prompt} prompt + {answer} answer "
          f"tokens, more than seq_len={max_len}; prompts lose only whole history items "
          f"(fitting.Budget), never their instruction, so raise config.lm.seq_len. Prompt: "
          f"{example['prompt'][:120]!r}, answer: {example['answer'][:80]!r}")


# Each task stream is read in the consuming thread: its examples are memoised (`Memo`), so grain's
# default read-ahead (16 threads, 500 elements) only adds a scan of its 500 futures per element
# (`benchmarks/lm_pipeline.py`: the demo mixture ~3x faster without it). Parallelism comes from
# worker processes (config.lm.data_workers).
READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def mixture(sources: dict[str, grain.MapDataset], weights: dict[str, float], seed: int,
            tokenizer: Tokenizer, max_len: int,
            shard: tuple[int, int] | None = None) -> grain.IterDataset:
  """Tokenized examples drawn from the task sources in proportion to `weights`, from shard
  (index, count) of every source: `parallel.input_shard(mesh)` for the mesh the batches feed
  (required with several JAX processes; one process reads everything)."""
  if shard is None:
    if jax.process_count() > 1:
      raise ValueError("several JAX processes: pass shard=parallel.input_shard(mesh)")
    shard = (0, 1)
  index, count = shard
  missing = sorted(set(weights) - set(sources))
  if missing:
    raise ValueError(f"weights for unknown task(s) {missing}; tasks: {sorted(sources)}")
  names = [n for n in sources if weights.get(n, 0) > 0]
  streams = []
  for i, name in enumerate(names):
    ds = Memo(sources[name][index::count].map(lambda ex: tokenize(ex, tokenizer, max_len)))
    streams.append(ds.shuffle(seed=seed + i).repeat().to_iter_dataset(READ_OPTIONS))
  return grain.IterDataset.mix(streams, [weights[n] for n in names])


class Memo(grain.MapDataset):
  """Each element built once per process and then served from memory: the task builders and the
  tokenizer are pure functions of the index, so epochs after the first skip building and
  tokenizing (a grain worker process keeps the elements of its own slice). grain's read-ahead
  threads can ask for one index twice at an epoch boundary, so each index is built under its own
  lock (an unlocked check built index 6 twice in one CI run)."""

  def __init__(self, parent: grain.MapDataset):
    super().__init__(parent)
    self._memo = {}
    self._locks = {}
    self._locks_lock = threading.Lock()

  def __getstate__(self):
    # Worker processes get a copy without locks (unpicklable) and start with an empty memo.
    state = dict(self.__dict__)
    state.update(_memo={}, _locks={}, _locks_lock=None)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._locks_lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._parent)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    index %= len(self)
    if index in self._memo:
      return self._memo[index]
    with self._locks_lock:
      lock = self._locks.setdefault(index, threading.Lock())
    with lock:
      if index not in self._memo:
        self._memo[index] = self._parent[index]
    with self._locks_lock:
      self._locks.pop(index, None)
    return self._memo[index]


# Rows filled at once. An example that fits none of them flushes them all, so more bins waste less
# (on the demo mixture: 8 bins 88.7% of tokens are real, 16 90.7%, 32 93.0%, 64 93.2%).
MIN_PACKING_BINS = 32


def local_batch_size(global_batch_size: int, shard_count: int = 1) -> int:
  """Rows each input shard packs so that the shards together fill the global batch."""
  if global_batch_size % shard_count:
    raise ValueError(f"batch_size {global_batch_size} does not split into {shard_count} "
                     "input shards (one per distinct slice of the batch the processes hold)")
  return global_batch_size // shard_count


def packed_batches(examples: grain.IterDataset, seq_len: int, batch_size: int,
                   drop_remainder: bool = True) -> grain.IterDataset:
  """First-fit packing into `batch_size` rows of `seq_len`; yields dicts of [batch, seq_len]
  arrays: tokens, mask, segment_ids, positions. (Training streams are endless; a finite
  evaluation stream keeps its last, smaller batch with drop_remainder=False.)"""
  packed = grain.experimental.FirstFitPackIterDataset(
      examples, length_struct={"tokens": seq_len, "mask": seq_len},
      num_packing_bins=max(batch_size, MIN_PACKING_BINS), shuffle_bins=False)

  def rename(row):
    return {"tokens": row["tokens"], "mask": row["mask"], "segment_ids": row["tokens_segment_ids"],
            "positions": row["tokens_positions"]}

  return packed.map(rename).batch(batch_size, drop_remainder=drop_remainder)


def training_batches(examples: grain.IterDataset, seq_len: int, rows: int, accumulate: int = 1,
                     workers: int = 0, put=None) -> grain.IterDataset:
  """The step's input: packed batches of `rows` (stacked [accumulate, rows, seq_len] when one
  step takes several micro-batches), built by `workers` grain worker processes (0: in this
  process), and with `put` (host arrays -> device arrays) run by a thread two batches ahead, so
  the next batch is on the device when the step wants it. The iterator's state stays exact:
  prefetched batches are not counted as consumed."""
  ds = packed_batches(examples, seq_len, rows)
  if accumulate > 1:
    ds = ds.batch(accumulate)
  if workers:
    if not flags.FLAGS.is_parsed():  # grain reads its own absl flags in the workers
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=2))
  if put is not None:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds.map(put), prefetch_buffer_size=2)
  return ds


def padded_batches(examples: grain.IterDataset, seq_len: int, batch_size: int,
                   drop_remainder: bool = True) -> grain.IterDataset:
  """One example per row, right-padded (the unpacked reference for the packed pipeline)."""

  def pad(example):
    n = len(example["tokens"])
    row = {k: np.zeros(seq_len, np.int32) for k in BATCH_KEYS}
    row["tokens"][:n], row["mask"][:n] = example["tokens"], example["mask"]
    row["segment_ids"][:n], row["positions"][:n] = 1, np.arange(n)
    return row

  return examples.map(pad).batch(batch_size, drop_remainder=drop_remainder)
