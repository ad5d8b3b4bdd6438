"""Shared by the 2-process LM test and its single-process reference: the model, mesh, config
and batches, so both sides build exactly the same run."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from semrec_jax import parallel
from semrec_jax.data import tfds_builders
from semrec_jax.lm import fitting, input_pipeline, stage, tasks
from semrec_jax.lm import tokenizer as tokenizer_lib
from semrec_jax.lm import trainer as trainer_lib
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder

STEPS, GLOBAL_BATCH, SEQ_LEN = 4, 8, 128
EVAL_TASKS = ("next_item", "text_to_sid", "bundle")
CONFIG = ml_collections.ConfigDict({
    "learning_rate": 3e-3, "warmup_steps": 2, "clip_norm": 1.0, "weight_decay": 0.01,
    "grad_accum": 1, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 3})


def mesh(devices, layout: str = "fsdp"):
  """layout "fsdp": data=2 x fsdp=2, each process holding one data slice. "tensor_across":
  data=2 x tensor=2 with each tensor pair spanning the two processes (devices ordered p0, p1,
  p0, p1), so both processes hold every row of the batch."""
  if layout == "tensor_across":
    by_process = sorted(devices, key=lambda d: (d.id % 2, d.process_index))
    return parallel.make_mesh(parallel.mesh_config(data=2, fsdp=1, tensor=2),
                              devices=by_process)
  return parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=1), devices=devices)


def batches(data_dir: str, sids_path: str, tokenizer_path: str, shard=(0, 1)):
  """Packed batches of input shard (index, count) of the task mixture, with its share of the
  global batch."""
  tokenizer = tokenizer_lib.Tokenizer(tokenizer_path)
  sources = tasks.sources(tfds_builders.sequences_source(data_dir, "train"),
                          tfds_builders.items_source(data_dir), tasks.load_sids(sids_path),
                          20, seed=0, budget=fitting.Budget(tokenizer, SEQ_LEN))
  stream = input_pipeline.mixture(sources, {"next_item": 2, "steering": 1, "text_to_sid": 1}, 0,
                            tokenizer, SEQ_LEN, shard=shard)
  return iter(input_pipeline.packed_batches(stream, SEQ_LEN,
                                      input_pipeline.local_batch_size(GLOBAL_BATCH, shard[1])))


def held_out_losses(trainer_, data_dir: str, sids_path: str, tokenizer_path: str) -> dict:
  """(held-out loss, examples this process evaluated) of three tasks; each process evaluates
  its share of the examples."""
  tokenizer = tokenizer_lib.Tokenizer(tokenizer_path)
  sources = tasks.sources(tfds_builders.sequences_source(data_dir, "validation"),
                          tfds_builders.items_source(data_dir), tasks.load_sids(sids_path), 20,
                          seed=0, held_out=True, budget=fitting.Budget(tokenizer, SEQ_LEN))
  c = ml_collections.ConfigDict({"eval_examples": 25, "seq_len": SEQ_LEN,
                                 "batch_size": GLOBAL_BATCH})
  batches = stage.held_out_batches({k: sources[k] for k in EVAL_TASKS}, tokenizer, c,
                                   parallel.input_shard(trainer_.mesh))
  examples = {k: int(sum(batch["segment_ids"].max(axis=1).sum() for batch in b))
              for k, b in batches.items()}  # this process's share
  return {k: trainer_.evaluate(b) for k, b in batches.items()}, examples


def trainer(tokenizer_path: str, mesh_) -> trainer_lib.LMTrainer:
  vocab_size = tokenizer_lib.Tokenizer(tokenizer_path).vocab_size
  config = configs.get("tiny", vocab_size=vocab_size, num_layers=2, embed_dim=128, mlp_dim=256,
                       num_heads=2, head_dim=32)
  model = parallel.shard_model(Decoder(config, nnx.Rngs(0)), mesh_)
  return trainer_lib.LMTrainer(model, CONFIG, "all", STEPS, mesh_)


def checksum(trainer) -> float:
  """Sum of |parameters|, reduced on the mesh (every process gets the same number)."""
  params = nnx.state(trainer.model, nnx.Param)
  total = jax.jit(lambda p: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(p)))(params)
  return float(np.asarray(jax.device_get(total)))
