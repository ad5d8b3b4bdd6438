"""SentencePiece tokenizers: load a tokenizer.model, rebuild one from GGUF metadata, add the
semantic-ID and control tokens as single pieces, or train a new one on catalog text.

Semantic-ID tokens are appended after the base vocabulary as user-defined pieces, so token id
`base_vocab + j` is new token j: exactly the decoder's new-token row j.
"""

import hashlib
import io

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from semrec_jax import storage

CONTROL_TOKENS = ("<|rec|>", "<|sid_start|>", "<|sid_end|>")


def semantic_id_tokens(levels: int, codebook_size: int) -> list[str]:
  """The tokens a semantic-ID vocabulary adds: control tokens, then <|sid_0|>..<|sid_{L*K-1}|>."""
  return list(CONTROL_TOKENS) + [f"<|sid_{i}|>" for i in range(levels * codebook_size)]


def model_proto_from_gguf(reader) -> sp_pb2.ModelProto:
  """Rebuilds Gemma's SentencePiece model from GGUF tokenizer metadata (a `gguf.GGUFReader`).

  Pieces, scores and types come from the file; the normaliser and trainer settings are Gemma's
  (BPE, byte fallback, no dummy prefix, no split at whitespace, whitespace kept and escaped as
  U+2581, digits split).
  """
  def field(name, default=None):
    return reader.fields[name].contents() if name in reader.fields else default
  if field("tokenizer.ggml.model") != "llama":
    raise ValueError(f"GGUF tokenizer {field('tokenizer.ggml.model')!r} is not a SentencePiece "
                     "(llama) tokenizer")
  tokens, scores = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.scores")
  types = field("tokenizer.ggml.token_type")
  unk = field("tokenizer.ggml.unknown_token_id", 3)
  proto = sp_pb2.ModelProto()
  for i, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
    if kind == sp_pb2.ModelProto.SentencePiece.USER_DEFINED and piece and set(piece) == {" "}:
      piece = piece.replace(" ", "\u2581")  # GGUF keeps runs of spaces raw; SentencePiece
      # matches them after escaping, as U+2581 runs
    p = proto.pieces.add()
    p.piece, p.score = piece, score
    p.type = sp_pb2.ModelProto.SentencePiece.UNKNOWN if i == unk else kind
  t = proto.trainer_spec
  t.model_type = sp_pb2.TrainerSpec.BPE
  t.vocab_size = len(tokens)
  t.byte_fallback = True
  t.split_digits = True
  t.allow_whitespace_only_pieces = True
  t.split_by_whitespace = False  # runs of spaces merge into one piece, as Gemma's tokenizer does
  t.unk_id = unk
  t.bos_id = field("tokenizer.ggml.bos_token_id", 2)
  t.eos_id = field("tokenizer.ggml.eos_token_id", 1)
  t.pad_id = field("tokenizer.ggml.padding_token_id", 0)
  t.unk_piece, t.bos_piece = tokens[t.unk_id], tokens[t.bos_id]
  t.eos_piece, t.pad_piece = tokens[t.eos_id], tokens[t.pad_id]
  n = proto.normalizer_spec
  n.name = "identity"
  n.add_dummy_prefix = bool(field("tokenizer.ggml.add_space_prefix", False))
  n.remove_extra_whitespaces = False
  n.escape_whitespaces = True
  return proto


def add_pieces(proto: sp_pb2.ModelProto, pieces: list[str]) -> sp_pb2.ModelProto:
  """Appends user-defined pieces (always one token each); existing pieces are an error."""
  existing = {p.piece for p in proto.pieces}
  clash = [p for p in pieces if p in existing]
  if clash:
    raise ValueError(f"pieces already in the vocabulary: {clash[:5]}")
  out = sp_pb2.ModelProto()
  out.CopyFrom(proto)
  for piece in pieces:
    p = out.pieces.add()
    p.piece, p.score, p.type = piece, 0.0, sp_pb2.ModelProto.SentencePiece.USER_DEFINED
  return out


def train(texts, vocab_size: int, reserved: list[str]) -> sp_pb2.ModelProto:
  """Trains a byte-fallback BPE SentencePiece model on `texts` with `reserved` as single pieces
  placed right after the special tokens (ids 4..), for the from-scratch `tiny` path."""
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=out, vocab_size=vocab_size, model_type="bpe",
      byte_fallback=True, split_digits=True, character_coverage=0.9995,
      user_defined_symbols=list(reserved), pad_id=0, eos_id=1, bos_id=2, unk_id=3,
      normalization_rule_name="identity", add_dummy_prefix=False,
      remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
      num_threads=1, minloglevel=2)  # one thread: the same model on every run
  proto = sp_pb2.ModelProto()
  proto.ParseFromString(out.getvalue())
  return proto


class Tokenizer:
  """A SentencePiece processor with the ids the rest of the stack needs."""

  def __init__(self, proto: sp_pb2.ModelProto | bytes | str):
    if isinstance(proto, str):
      proto = storage.path(proto).read_bytes()
    self.serialized = proto if isinstance(proto, bytes) else proto.SerializeToString()
    self.sp = spm.SentencePieceProcessor(model_proto=self.serialized)
    self.bos_id, self.eos_id, self.pad_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()
    # The item delimiters (-1 for a tokenizer without semantic-ID tokens).
    self.sid_start_id, self.sid_end_id = (self.sp.piece_to_id(p) if self.sp.id_to_piece(
        self.sp.piece_to_id(p)) == p else -1 for p in ("<|sid_start|>", "<|sid_end|>"))
    # Gemma's turn markers (control pieces, never parsed from text); None for other tokenizers.
    turns = [self.sp.piece_to_id(p) for p in ("<start_of_turn>", "<end_of_turn>")]
    self.turn_ids = tuple(turns) if all(self.sp.id_to_piece(i) == p for i, p in zip(
        turns, ("<start_of_turn>", "<end_of_turn>"))) else None

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str, bos: bool = False) -> list[int]:
    ids = self.sp.encode(text)
    return [self.bos_id] + ids if bos else ids

  def prompt_ids(self, text: str) -> list[int]:
    """A task prompt as the model reads it (without bos): in Gemma's chat turns where the
    tokenizer has them ("<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"),
    so a pretrained Gemma is asked the way it was instruction-tuned; the text as is otherwise."""
    if self.turn_ids is None:
      return self.encode(text)
    start, end = self.turn_ids
    return ([start] + self.encode("user\n" + text) + [end] + self.encode("\n") + [start] +
            self.encode("model\n"))

  def decode(self, ids) -> str:
    return self.sp.decode([int(i) for i in ids])

  def piece_id(self, piece: str) -> int:
    i = self.sp.piece_to_id(piece)
    if self.sp.id_to_piece(i) != piece:
      raise KeyError(f"{piece!r} is not a piece of this tokenizer")
    return i

  def save(self, path: str) -> None:
    storage.write_bytes(path, self.serialized)

  def fingerprint(self) -> str:
    return hashlib.sha256(self.serialized).hexdigest()[:16]


def load_proto(path: str) -> sp_pb2.ModelProto:
  """A SentencePiece ModelProto from a tokenizer.model file."""
  if not storage.path(path).is_file():
    raise FileNotFoundError(f"no SentencePiece model at {path}")
  proto = sp_pb2.ModelProto()
  proto.ParseFromString(storage.path(path).read_bytes())
  return proto


def from_gguf(path: str) -> Tokenizer:
  from semrec_jax.models import params  # pylint: disable=import-outside-toplevel  # JAX: on use
  return Tokenizer(model_proto_from_gguf(params.gguf_reader(path)))

