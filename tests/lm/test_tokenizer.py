"""A SentencePiece model trained on catalog text for the from-scratch path."""

import csv
import gzip
import os

from semrec_jax import defaults
from semrec_jax.lm import tokenizer as tokenizer_lib


def _titles():
  with gzip.open(os.path.join(defaults.SAMPLE_DIR, "items.csv.gz"), "rt", encoding="utf-8") as f:
    return [row["title"] for row in csv.DictReader(f)]


def test_train_on_catalog_text_with_reserved_tokens():
  reserved = tokenizer_lib.semantic_id_tokens(levels=2, codebook_size=8)
  tokenizer = tokenizer_lib.Tokenizer(tokenizer_lib.train(_titles(), 1024, reserved))
  assert tokenizer.vocab_size == 1024
  assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id) == (0, 1, 2)
  assert [tokenizer.piece_id(t) for t in reserved] == list(range(4, 4 + len(reserved)))
  text = "<|sid_start|><|sid_3|><|sid_12|><|sid_end|> Halo 3 - Xbox 360 for £20 ™"
  ids = tokenizer.encode(text)
  assert ids[:4] == [5, 4 + 3 + 3, 4 + 3 + 12, 6]
  assert tokenizer.decode(ids) == text  # byte fallback: nothing is lost
  assert len(tokenizer.encode("Nintendo 3DS XL")) <= 6  # catalog words are whole pieces
  assert tokenizer.turn_ids is None and tokenizer.prompt_ids(text) == ids  # no chat turns
