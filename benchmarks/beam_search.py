r"""Trie-constrained beam search (semrec_jax/lm/decoding.py): recommendations/s and p50 latency per
call; prints one JSON line.

  python benchmarks/beam_search.py --model=tiny --batch_size=1 --beam=20
  python benchmarks/beam_search.py --model=tiny --batch_size=64 --beam=20 --items=1000000

Random weights and a random catalog of --items distinct 4-level semantic IDs (256 codes per level;
levels whose dense table would pass DENSE_LIMIT entries use the sparse CSR layout). Prompts are
next-item prompts of --history items (6 tokens each). Timed after one compiling call.
"""

import json
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx

from semrec_jax import backend, parallel
from semrec_jax.ids import trie as trie_lib
from semrec_jax.lm import decoding
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder

_MODEL = flags.DEFINE_string("model", "tiny", "Named config.")
_BATCH = flags.DEFINE_integer("batch_size", 1, "Prompts per call.")
_BEAM = flags.DEFINE_integer("beam", 20, "Beam width (items returned per prompt).")
_ITEMS = flags.DEFINE_integer("items", 16_859, "Catalog size (default: the Games benchmark).")
_HISTORY = flags.DEFINE_integer("history", 20, "History items per prompt.")
_CALLS = flags.DEFINE_integer("calls", 10, "Timed calls.")

LEVELS, K = 4, 256


def random_catalog(num_items: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  ids = np.unique(rng.integers(0, K, (int(num_items * 1.05) + 16, LEVELS)), axis=0)
  return ids[rng.permutation(len(ids))[:num_items]]


def main(argv):
  del argv
  config = configs.get(_MODEL.value, vocab_size=4096) if _MODEL.value == "tiny" else (
      configs.get(_MODEL.value, num_new_tokens=LEVELS * K + 3))
  model = Decoder(config, nnx.Rngs(0))
  mesh = parallel.make_mesh()
  parallel.shard_model(model, mesh)
  base = config.vocab_size - LEVELS * K - 8 if _MODEL.value == "tiny" else config.vocab_size
  code_tokens = base + np.arange(LEVELS * K).reshape(LEVELS, K)
  trie = trie_lib.build(random_catalog(_ITEMS.value), K)
  dec = decoding.SidDecoder(model, code_tokens, base + LEVELS * K, trie, mesh=mesh,
                            batch_size=_BATCH.value)
  rng = np.random.default_rng(1)
  prompt_len = 12 + 6 * _HISTORY.value
  prompts = [list(rng.integers(4, base, prompt_len)) for _ in range(_BATCH.value)]
  dec.items(prompts, _BEAM.value)  # compile
  times = []
  for _ in range(_CALLS.value):
    start = time.perf_counter()
    dec.items(prompts, _BEAM.value)
    times.append(time.perf_counter() - start)
  p50 = float(np.median(times))
  print(json.dumps({
      "benchmark": "beam_search", "model": _MODEL.value, "batch_size": _BATCH.value,
      "beam": _BEAM.value, "items": _ITEMS.value, "prompt_tokens": prompt_len,
      "sparse_levels": sum(f > 0 for f in dec.trie.fanout),
      "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "p50_latency_ms": round(1000 * p50, 1),
      "recommendations_per_s": round(_BATCH.value / p50, 1)}))


if __name__ == "__main__":
  backend.choose()
  app.run(main)
