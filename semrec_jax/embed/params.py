"""Hugging Face BERT safetensors -> BertEncoder state (key map plus transposes)."""

import re

import numpy as np
from flax import nnx
from safetensors import safe_open

from semrec_jax.embed.bert import BertEncoder

# (regex on the checkpoint key, path in the NNX state, transpose)
_KEY_MAP = [
    (r"embeddings\.word_embeddings\.weight", "word_embeddings/embedding", False),
    (r"embeddings\.position_embeddings\.weight", "position_embeddings/embedding", False),
    (r"embeddings\.token_type_embeddings\.weight", "token_type_embeddings/embedding", False),
    (r"embeddings\.LayerNorm\.weight", "embedding_norm/scale", False),
    (r"embeddings\.LayerNorm\.bias", "embedding_norm/bias", False),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.weight", r"layers/\1/\2/kernel", True),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.bias", r"layers/\1/\2/bias", False),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.weight", r"layers/\1/attention_out/kernel", True),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.bias", r"layers/\1/attention_out/bias", False),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.weight", r"layers/\1/attention_norm/scale", False),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.bias", r"layers/\1/attention_norm/bias", False),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.weight", r"layers/\1/intermediate/kernel", True),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.bias", r"layers/\1/intermediate/bias", False),
    (r"encoder\.layer\.(\d+)\.output\.dense\.weight", r"layers/\1/output/kernel", True),
    (r"encoder\.layer\.(\d+)\.output\.dense\.bias", r"layers/\1/output/bias", False),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.weight", r"layers/\1/output_norm/scale", False),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.bias", r"layers/\1/output_norm/bias", False),
]
_IGNORED = (r"embeddings\.position_ids", r"pooler\..*")


def _target(key: str) -> tuple[str, bool] | None:
  key = key.removeprefix("bert.")
  for pattern, path, transpose in _KEY_MAP:
    if re.fullmatch(pattern, key):
      return re.sub(pattern, path, key), transpose
  if any(re.fullmatch(p, key) for p in _IGNORED):
    return None
  raise ValueError(f"unexpected tensor {key!r} in a BERT checkpoint")


def load_safetensors(model: BertEncoder, path: str) -> BertEncoder:
  """Copies the checkpoint's tensors into `model` in place; every parameter must be covered."""
  flat = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  loaded = set()
  with safe_open(path, framework="numpy") as f:
    for key in f.keys():
      target = _target(key)
      if target is None:
        continue
      name, transpose = target
      if name not in flat:
        raise ValueError(f"{path}: tensor {key!r} maps to {name!r}, which the model lacks")
      value = f.get_tensor(key)
      value = value.T if transpose else value
      variable = flat[name]
      if value.shape != variable.shape:
        raise ValueError(f"{path}: tensor {key!r} has shape {value.shape}, model expects "
                         f"{variable.shape} at {name}")
      variable.set_value(np.asarray(value, dtype=variable.dtype))
      loaded.add(name)
  missing = sorted(set(flat) - loaded)
  if missing:
    raise ValueError(f"{path}: no tensor for {missing[:5]} ({len(missing)} missing)")
  return model
