"""A SentencePiece model trained on catalog text for the from-scratch path, and new-row init."""

import csv
import gzip
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from semrec_jax import defaults
from semrec_jax.lm import tokenizer as tokenizer_lib
from semrec_jax.models import configs, params
from semrec_jax.models.decoder import Decoder


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


def test_new_rows_from_text():
  model = Decoder(configs.get("tiny", vocab_size=64, num_new_tokens=2), nnx.Rngs(0))
  params.init_new_rows_from_text(model, [[3, 5], [7]])
  base = model.embedder.embedding[...]
  np.testing.assert_allclose(model.embedder.new_embedding[0], (base[3] + base[5]) / 2, atol=1e-6)
  np.testing.assert_allclose(model.embedder.new_embedding[1], base[7], atol=1e-6)
  logits = model(jnp.asarray([[64, 65]]))
  assert logits.shape == (1, 2, 128)
