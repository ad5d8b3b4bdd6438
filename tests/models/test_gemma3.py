"""Gemma 3 270M from the real GGUF weights against `transformers` goldens; tokenizer parity."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from semrec_jax import generate, parallel
from semrec_jax.lm import decoding
from semrec_jax.lm import tokenizer as tokenizer_lib
from semrec_jax.models import configs, params
from tests.conftest import FIXTURES

GOLDEN = os.path.join(FIXTURES, "gemma3", "golden.npz")
TOKENIZER_GOLDEN = os.path.join(FIXTURES, "gemma3", "tokenizer_golden.npz")


@pytest.fixture(scope="module")
def gguf_file():
  return params.gguf_path("package")


@pytest.fixture(scope="module")
def model(gguf_file):
  # One device: a batch of one prompt gains nothing from 8 simulated CPU devices.
  return params.load_gguf(configs.get("gemma3_270m", num_new_tokens=1027), gguf_file,
                          mesh=parallel.make_mesh(devices=jax.devices()[:1]))


@pytest.fixture(scope="module")
def golden():
  return np.load(GOLDEN)


def test_logits_match_transformers(model, golden):
  """All prompts right-padded to one length (padding has segment 0), so it compiles once."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, tokens, segments: nnx.merge(graphdef, state)(
      tokens, segment_ids=segments))
  prompts = [golden[f"ids_{i}"] for i in range(len(golden["prompts"]))]
  width = max(map(len, prompts))
  tokens = np.zeros((len(prompts), width), np.int32)
  for i, ids in enumerate(prompts):
    tokens[i, :len(ids)] = ids
  all_logits = np.asarray(forward(state, tokens, (tokens != 0).astype(np.int32)))
  for i, ids in enumerate(prompts):
    logits = all_logits[i, :len(ids)]
    assert logits.shape == (len(ids), 263_296)  # 262,144 + 1,027 new, padded to 128
    np.testing.assert_allclose(logits[:, golden[f"vocab_ids_{i}"]], golden[f"logits_{i}"],
                               atol=1e-3, rtol=0)
    np.testing.assert_array_equal(logits.argmax(-1), golden[f"argmax_{i}"])
    assert logits[:, 262_144 + 1027:].max() < -1e30  # padding rows can never be predicted


def test_greedy_continuation_is_identical(model, golden):
  for i in range(len(golden["prompts"])):
    out = decoding.greedy(model, golden[f"ids_{i}"].tolist(), 30)
    np.testing.assert_array_equal(out, golden[f"greedy_{i}"])


@pytest.fixture(scope="module")
def tokenizer(gguf_file):
  return tokenizer_lib.from_gguf(gguf_file)


def test_generate_continues_a_prompt_greedily(model, tokenizer):
  """What `python -m semrec_jax.generate` prints after the prompt (tests/models/test_generate_cli.py
  runs the command itself): transformers' greedy continuation (golden.npz, prompt 0)."""
  prompt = "The best racing game for the PlayStation 4 is"
  assert generate.continuation(model, tokenizer, prompt, 6) == " the one that you can play"


def test_tokenizer_rebuilt_from_gguf_matches_reference(tokenizer):
  golden = np.load(TOKENIZER_GOLDEN)
  assert len(golden["texts"]) == 3200 and tokenizer.vocab_size == 262_144
  for i, text in enumerate(golden["texts"]):
    expected = golden["ids"][golden["offsets"][i]:golden["offsets"][i + 1]].tolist()
    assert tokenizer.encode(str(text)) == expected, text
  assert tokenizer.decode(tokenizer.encode("Pokémon &amp; Friends")) == "Pokémon &amp; Friends"
  # Task prompts go in Gemma's chat turns; the markers are control pieces, never parsed from text.
  assert tokenizer.turn_ids == (105, 106)
  assert tokenizer.prompt_ids("Hi") == [105] + tokenizer.encode("user\nHi") + [106, 107, 105] + \
      tokenizer.encode("model\n")
  assert tokenizer.encode("<start_of_turn>")[0] != 105


def test_semantic_id_tokens_are_single_pieces(gguf_file):
  base = tokenizer_lib.model_proto_from_gguf(params.gguf_reader(gguf_file))
  new = tokenizer_lib.semantic_id_tokens(levels=4, codebook_size=256)
  assert len(new) == 1027
  tokenizer = tokenizer_lib.Tokenizer(tokenizer_lib.add_pieces(base, new))
  text = "<|rec|><|sid_start|><|sid_3|><|sid_256|><|sid_767|><|sid_1023|><|sid_end|> Halo 3"
  ids = tokenizer.encode(text)
  sid = 262_144 + 3  # <|sid_0|> follows the three control tokens
  assert ids[:7] == [262_144, 262_145, sid + 3, sid + 256, sid + 767, sid + 1023, 262_146]
  assert tokenizer.decode(ids) == text
  with pytest.raises(ValueError, match="already in the vocabulary"):
    tokenizer_lib.add_pieces(base, ["<eos>"])


def test_bad_weights_are_named(tmp_path, gguf_file):
  with pytest.raises(ValueError, match="does not match the config"):
    params.load_gguf(configs.get("gemma3_1b"), gguf_file)
  with pytest.raises(FileNotFoundError, match="not found"):
    params.gguf_path(str(tmp_path / "missing.gguf"))
