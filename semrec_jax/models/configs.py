"""Decoder configs: one dataclass for every family, and the named configs users pick by name."""

import dataclasses

VOCAB_MULTIPLE = 128  # the full vocabulary (base + new tokens) is padded to a multiple of this


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  family: str             # gemma3 | llama | qwen3
  vocab_size: int         # base vocabulary (the pretrained table)
  embed_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  norm_eps: float = 1e-6
  rope_base: float = 10_000.0          # global (full-attention) layers
  rope_base_local: float = 10_000.0    # sliding-window layers
  rope_scale: float = 1.0              # linear RoPE scaling of global layers (Gemma 3 4B: 8)
  sliding_window: int | None = None    # None: every layer attends globally
  global_every: int = 1                # layer i is global when (i + 1) % global_every == 0
  query_scale: float | None = None     # None: head_dim ** -0.5
  tie_embeddings: bool = True
  num_new_tokens: int = 0              # semantic-ID and control tokens appended to the vocabulary
  max_len: int = 2048
  attention: str = "auto"              # auto | xla | cudnn | splash (models/attention.py)
  remat: str = "none"                  # none | dots | full: what a layer's backward recomputes
  scan_unroll: bool = False            # unroll the layer scan (without remat): faster for a
                                       # few small groups (tiny on a CPU)

  @property
  def group_size(self) -> int:
    """Layers in the repeating unit the decoder scans over: Gemma 3's sliding-window layers and
    the global one after them (6), or 1 when every layer is alike."""
    return self.global_every if self.sliding_window is not None else 1

  @property
  def num_groups(self) -> int:
    return self.num_layers // self.group_size

  @property
  def first_tail_layer(self) -> int:
    """The first layer after the last whole group; it and those after it form the tail stack."""
    return self.num_groups * self.group_size

  @property
  def num_tail(self) -> int:
    return self.num_layers - self.first_tail_layer

  def layer_slot(self, layer: int) -> tuple[str, int]:
    """Where layer `layer`'s parameters live, as (path, index on the stacked axis): block j of
    group g of the scanned groups, or the k-th of the layers after the last whole group (Gemma 3
    1B: 26 = 4 x 6 + 2), each a one-block group of the tail stack."""
    if not 0 <= layer < self.num_layers:
      raise ValueError(f"layer {layer} out of range for a {self.num_layers}-layer model")
    group, j = divmod(layer, self.group_size)
    if group < self.num_groups:
      return f"groups/blocks/{j}", group
    return "tail/blocks/0", layer - self.first_tail_layer

  @property
  def is_gemma(self) -> bool:
    return self.family == "gemma3"

  @property
  def qk_norm(self) -> bool:
    return self.family in ("gemma3", "qwen3")

  @property
  def output_vocab_size(self) -> int:
    """Tokens the model can predict: the base vocabulary and the new tokens, without padding."""
    return self.vocab_size + self.num_new_tokens

  @property
  def padded_vocab_size(self) -> int:
    return -(-self.output_vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

  @property
  def num_new_rows(self) -> int:
    """Rows of the new-token table: the new tokens plus the padding to VOCAB_MULTIPLE."""
    return self.padded_vocab_size - self.vocab_size

  def is_global(self, layer: int) -> bool:
    return self.sliding_window is None or (layer + 1) % self.global_every == 0

  def replace(self, **changes) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)


_GEMMA3 = dict(family="gemma3", vocab_size=262_144, norm_eps=1e-6, rope_base=1_000_000.0,
               rope_base_local=10_000.0, global_every=6, tie_embeddings=True)

CONFIGS = {
    # From scratch on a CPU: a few M parameters, Gemma-3 layout, vocabulary from a trained
    # SentencePiece model (the size is set when the tokenizer is known).
    "tiny": DecoderConfig(family="gemma3", vocab_size=8192, embed_dim=256, num_layers=4,
                          num_heads=4, num_kv_heads=1, head_dim=64, mlp_dim=1024,
                          rope_base=10_000.0, sliding_window=128, global_every=2, max_len=512,
                          scan_unroll=True),
    "gemma3_270m": DecoderConfig(**_GEMMA3, embed_dim=640, num_layers=18, num_heads=4,
                                 num_kv_heads=1, head_dim=256, mlp_dim=2048, sliding_window=512,
                                 query_scale=256 ** -0.5),
    "gemma3_1b": DecoderConfig(**_GEMMA3, embed_dim=1152, num_layers=26, num_heads=4,
                               num_kv_heads=1, head_dim=256, mlp_dim=6912, sliding_window=512,
                               query_scale=256 ** -0.5),
    "gemma3_4b": DecoderConfig(**_GEMMA3, embed_dim=2560, num_layers=34, num_heads=8,
                               num_kv_heads=4, head_dim=256, mlp_dim=10240, sliding_window=1024,
                               query_scale=256 ** -0.5, rope_scale=8.0),
    "qwen3_0_6b": DecoderConfig(family="qwen3", vocab_size=151_936, embed_dim=1024,
                                num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                                mlp_dim=3072, rope_base=1_000_000.0, tie_embeddings=True),
    "qwen3_8b": DecoderConfig(family="qwen3", vocab_size=151_936, embed_dim=4096, num_layers=36,
                              num_heads=32, num_kv_heads=8, head_dim=128, mlp_dim=12288,
                              rope_base=1_000_000.0, tie_embeddings=False),
}


def get(name: str, **overrides) -> DecoderConfig:
  if name not in CONFIGS:
    raise ValueError(f"unknown model {name!r}; known: {sorted(CONFIGS)}")
  return CONFIGS[name].replace(**overrides)


def from_hf(path: str, **overrides) -> DecoderConfig:
  """A DecoderConfig from a Hugging Face config.json (gemma3/gemma3_text, qwen3, llama)."""
  import json  # pylint: disable=import-outside-toplevel
  with open(path) as f:
    raw = json.load(f)
  raw = raw.get("text_config", raw)  # multimodal Gemma 3 checkpoints nest the text model
  family = {"gemma3_text": "gemma3", "gemma3": "gemma3", "qwen3": "qwen3",
            "llama": "llama"}.get(raw.get("model_type"))
  if family is None:
    raise ValueError(f"{path}: unsupported model_type {raw.get('model_type')!r}; "
                     "expected gemma3, qwen3 or llama")
  rope = raw.get("rope_parameters") or {}
  if "full_attention" in rope:  # Gemma 3: one RoPE setting per layer type
    global_rope, local_rope = rope["full_attention"], rope.get("sliding_attention", {})
  else:
    global_rope = local_rope = rope
  theta = global_rope.get("rope_theta", raw.get("rope_theta", 10_000.0))
  rope_type = global_rope.get("rope_type") or (raw.get("rope_scaling") or {}).get("rope_type")
  if rope_type not in (None, "default", "linear"):
    raise ValueError(f"{path}: RoPE type {rope_type!r} is not supported (default or linear)")
  scaling = global_rope.get("factor") if rope_type == "linear" else None
  fields = dict(
      family=family, vocab_size=raw["vocab_size"], embed_dim=raw["hidden_size"],
      num_layers=raw["num_hidden_layers"], num_heads=raw["num_attention_heads"],
      num_kv_heads=raw.get("num_key_value_heads", raw["num_attention_heads"]),
      head_dim=raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"],
      mlp_dim=raw["intermediate_size"], norm_eps=raw.get("rms_norm_eps", 1e-6),
      rope_base=float(theta), rope_base_local=float(local_rope.get("rope_theta", theta)),
      rope_scale=float(scaling or 1.0),
      tie_embeddings=bool(raw.get("tie_word_embeddings", family != "llama")))
  if family == "gemma3":
    fields.update(sliding_window=raw.get("sliding_window"),
                  global_every=raw.get("_sliding_window_pattern",
                                       raw.get("sliding_window_pattern", 6)),
                  query_scale=raw.get("query_pre_attn_scalar", fields["head_dim"]) ** -0.5,
                  rope_base_local=float(local_rope.get("rope_theta",
                                                       raw.get("rope_local_base_freq", 1e4))))
  elif raw.get("use_sliding_window"):
    raise ValueError(f"{path}: sliding-window Qwen/Llama layers are not supported")
  fields.update(overrides)
  return DecoderConfig(**fields)
