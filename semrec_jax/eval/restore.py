"""Restore a trained LM for evaluation or chat: parameters only (no optimizer or data-iterator
state), into an abstract model built on the current mesh, from a checkpoint written on any mesh
or number of processes; with its tokenizer, semantic IDs, trie and catalog."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from semrec_jax import parallel, storage
from semrec_jax.data import tfds_builders
from semrec_jax.ids import assign, trie as trie_lib
from semrec_jax.lm import tokenizer as tokenizer_lib
from semrec_jax.lm.stage import decoder_config
from semrec_jax.models.decoder import Decoder


class MissingArtifact(RuntimeError):
  """What evaluation or chat needs is not in the workdir (says what and how to make it)."""


@dataclasses.dataclass
class TrainedLM:
  model: Decoder
  tokenizer: tokenizer_lib.Tokenizer
  step: int
  stage: str
  config: ml_collections.ConfigDict  # the lm section the checkpoint was trained with
  sids: list[str]                    # token string of each item
  codes: np.ndarray                  # [items, levels] semantic-ID codes
  trie: trie_lib.Trie
  code_tokens: np.ndarray            # [levels, K] token id of each code
  sid_start: int
  items: object                      # the catalog data source (item i = row i)


SOURCES = ("lm", "prefer")  # the stages whose checkpoints hold a decoder


def checkpoint_dir(workdir: str, source: str = "lm") -> tuple[str, str]:
  """(folder, stage) of the final LM training stage's checkpoints, or of the preference stage's
  (source "prefer")."""
  if source == "prefer":
    folder = os.path.join(workdir, "prefer", "checkpoints")
    if not storage.path(folder).is_dir():
      raise MissingArtifact(f"no preference checkpoints in {workdir}/prefer: run the prefer "
                            "stage with config.prefer.steps > 0")
    return folder, "prefer"
  if source != "lm":
    raise ValueError(f"unknown checkpoint source {source!r}; known: {SOURCES}")
  info_path = os.path.join(workdir, "lm", "info.json")
  if not storage.path(info_path).is_file():
    raise MissingArtifact(f"no trained LM in {workdir}/lm (no info.json): run "
                          f"`python -m semrec_jax.main --config=... --workdir={workdir}` "
                          "with the lm stage first")
  stage = storage.read_json(info_path)["final"]["stage"]
  return os.path.join(workdir, "lm", "checkpoints", stage), stage


def load(workdir: str, step: int | None = None, mesh=None, source: str = "lm") -> TrainedLM:
  """The LM at `step` of its final training stage (default: the latest) on `mesh` (default: all
  devices, data-parallel); source "prefer": the preference stage's policy instead."""
  mesh = mesh or parallel.make_mesh()
  folder, stage = checkpoint_dir(workdir, source)
  # Orbax reads arrays only from absolute paths (a relative workdir failed there on jax 0.11).
  mngr = ocp.CheckpointManager(storage.path(folder),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  steps = mngr.all_steps()
  if not steps:
    raise MissingArtifact(f"no checkpoints in {folder}: re-run the lm stage")
  step = mngr.latest_step() if step is None else step
  if step not in steps:
    raise MissingArtifact(f"no checkpoint for step {step} in {folder}; it has steps "
                          f"{sorted(steps)}")
  meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  tokenizer = tokenizer_lib.Tokenizer(os.path.join(workdir, "lm", "tokenizer.model"))
  if tokenizer.fingerprint() != meta.get("tokenizer"):
    raise MissingArtifact(f"checkpoint {folder}/{step} was trained with tokenizer "
                          f"{meta.get('tokenizer')}, but {workdir}/lm/tokenizer.model is "
                          f"{tokenizer.fingerprint()}: the lm folder is inconsistent; re-run "
                          "the lm stage with --overwrite")
  c = ml_collections.ConfigDict(meta["config"])
  config = decoder_config(c, tokenizer.vocab_size)
  abstract = nnx.eval_shape(lambda: Decoder(config, nnx.Rngs(0), dtype=jnp.dtype(c.dtype)))
  graphdef, state = nnx.split(abstract)
  shardings = nnx.to_pure_dict(parallel.state_shardings(state, mesh))
  target = {"0": jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                              nnx.to_pure_dict(state), shardings)}
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))
  mngr.close()
  nnx.replace_by_pure_dict(state, restored["state"]["0"])
  ids_dir = os.path.join(workdir, "ids")
  trie = trie_lib.load(os.path.join(ids_dir, "trie.npz"))
  code_tokens = np.asarray([[tokenizer.piece_id(f"<|sid_{level * trie.codebook_size + code}|>")
                             for code in range(trie.codebook_size)]
                            for level in range(trie.levels)], np.int32)
  sids, codes = assign.read_table(os.path.join(ids_dir, "semantic_ids.tsv"))
  return TrainedLM(
      model=nnx.merge(graphdef, state), tokenizer=tokenizer, step=step, stage=stage, config=c,
      sids=sids, codes=codes, trie=trie,
      code_tokens=code_tokens, sid_start=tokenizer.piece_id("<|sid_start|>"),
      items=tfds_builders.items_source(os.path.join(workdir, "data")))
