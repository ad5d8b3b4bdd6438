r"""LM input pipeline vs the `tiny` train step it feeds; prints one JSON line.

  python benchmarks/lm_pipeline.py --workdir=W   # W: a demo workdir after prepare, embed, ids, lm

Measures packed batches/s, examples/s and tokens/s of the grain pipeline (task mixture ->
tokenize -> first-fit packing -> batches), the packing efficiency (non-padding share of tokens), and
the tiny model's train-step tokens/s on the same batches. Target: pipeline >= 10x the step;
packing efficiency >= 90%.
"""

import json
import os
import time

import jax
import ml_collections
from absl import app, flags
from flax import nnx

from semrec_jax import backend, defaults, parallel
from semrec_jax.data import tfds_builders
from semrec_jax.lm import fitting, input_pipeline, tasks
from semrec_jax.lm.tokenizer import Tokenizer
from semrec_jax.lm.trainer import LMTrainer
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder

_WORKDIR = flags.DEFINE_string("workdir", None, "Demo workdir (data/, ids/, lm/tokenizer.model).")
_BATCHES = flags.DEFINE_integer("batches", 50, "Batches to time.")
_WORKERS = flags.DEFINE_integer("workers", 0, "grain worker processes (config.lm.data_workers).")


def main(argv):
  del argv
  c = defaults.base_config().lm  # the demo's LM settings
  data_dir = os.path.join(_WORKDIR.value, "data")
  items = tfds_builders.items_source(data_dir)
  sids = tasks.load_sids(os.path.join(_WORKDIR.value, "ids", "semantic_ids.tsv"))
  tokenizer = Tokenizer(os.path.join(_WORKDIR.value, "lm", "tokenizer.model"))
  sources = tasks.sources(tfds_builders.sequences_source(data_dir, "train"), items, sids,
                          c.max_history, c.seed, budget=fitting.Budget(tokenizer, c.seq_len))
  stream = input_pipeline.mixture(sources, dict(c.task_weights), c.seed, tokenizer, c.seq_len)
  it = iter(input_pipeline.training_batches(stream, c.seq_len, c.batch_size, workers=_WORKERS.value))
  for _ in range(max(1, 2 * _WORKERS.value)):  # the workers' start-up is not timed
    next(it)
  start = time.perf_counter()
  batches = [next(it) for _ in range(_BATCHES.value)]
  pipe_s = (time.perf_counter() - start) / _BATCHES.value
  tokens = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
  examples = sum(int(b["segment_ids"].max(axis=1).sum()) for b in batches)
  slots = _BATCHES.value * c.batch_size * c.seq_len
  answers = sum(int(b["mask"].sum()) for b in batches)
  it.close()

  model = Decoder(configs.get(c.model, vocab_size=tokenizer.vocab_size), nnx.Rngs(0))
  step_config = ml_collections.ConfigDict({**c.to_dict(), "learning_rate": 1e-3})
  trainer = LMTrainer(model, step_config, "all", 100, parallel.make_mesh())
  trainer.state, m = trainer.step(trainer.state, trainer.put(batches[0]))
  jax.block_until_ready(m["loss"])
  start = time.perf_counter()
  for b in batches[1:11]:
    trainer.state, m = trainer.step(trainer.state, trainer.put(b))
  jax.block_until_ready(m["loss"])
  step_s = (time.perf_counter() - start) / 10
  print(json.dumps({
      "benchmark": "lm_pipeline", "seq_len": c.seq_len, "batch_size": c.batch_size,
      "pipeline_batches_per_s": round(1 / pipe_s, 1),
      "pipeline_examples_per_s": round(examples / (pipe_s * _BATCHES.value), 1),
      "pipeline_tokens_per_s": round(tokens / (pipe_s * _BATCHES.value)),
      "examples_per_batch": round(examples / _BATCHES.value, 2),
      "tokens_per_example": round(tokens / max(examples, 1), 1),
      "packing_efficiency": round(tokens / slots, 4), "workers": _WORKERS.value,
      "answer_share": round(answers / tokens, 4),
      "tiny_step_s": round(step_s, 4),
      "tiny_step_tokens_per_s": round(tokens / _BATCHES.value / step_s),
      "pipeline_over_step": round(step_s / pipe_s, 1),
      "device": f"{jax.devices()[0].platform} x{jax.device_count()}", "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  backend.choose()
  app.run(main)
