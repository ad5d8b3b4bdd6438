"""The Flax BERT encoder against the reference (sentence-transformers), sharding and the CLI."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from semrec_jax import parallel
from semrec_jax.embed.encoder import TextEncoder
from semrec_jax.embed.text import FIELDS, check_fields, item_text
from tests.conftest import FIXTURES, REPO

GOLDEN = os.path.join(FIXTURES, "minilm_golden.npz")


@pytest.fixture(scope="module")
def golden():
  return np.load(GOLDEN)


@pytest.fixture(scope="module")
def encoder(golden):
  return TextEncoder(max_length=int(golden["max_seq_length"]), batch_size=16)


def test_matches_sentence_transformers(encoder, golden):
  vectors = encoder.encode(list(golden["texts"]))
  assert vectors.shape == (48, 384) and vectors.dtype == np.float32
  cosine = (vectors * golden["vectors"]).sum(axis=1)
  assert cosine.min() >= 0.999
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
  # the last 8 golden texts are longer than 256 tokens: truncation matches the reference too
  assert min(len(ids) for ids in encoder.tokenize(list(golden["texts"][-8:]))) == 256


def test_sharded_equals_single_device(encoder, golden):
  assert len(jax.devices()) == 8
  single = TextEncoder(batch_size=16, mesh=parallel.make_mesh(devices=jax.devices()[:1]))
  texts = list(golden["texts"][:24])
  np.testing.assert_allclose(encoder.encode(texts), single.encode(texts), atol=2e-6)
  assert encoder.mesh.shape["data"] == 8


def test_order_follows_input_and_batches_do_not_mix(encoder, golden):
  texts = list(golden["texts"][:20])
  shuffled = texts[::-1]
  np.testing.assert_allclose(encoder.encode(shuffled), encoder.encode(texts)[::-1], atol=2e-6)
  one = encoder.encode(texts[:1])
  np.testing.assert_allclose(one[0], encoder.encode(texts)[0], atol=2e-6)


def test_cli_embeds_a_file_in_line_order(tmp_path, encoder, golden):
  texts = [str(t) for t in golden["texts"][:5]]
  (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
  result = subprocess.run(
      [sys.executable, "-m", "semrec_jax.embed", f"--texts={tmp_path / 'texts.txt'}",
       f"--out={tmp_path / 'out.npy'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  out = np.load(tmp_path / "out.npy")
  assert out.shape == (5, 384)
  np.testing.assert_allclose((out * golden["vectors"][:5]).sum(1), 1.0, atol=1e-3)


def test_missing_weights_folder_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    TextEncoder(model_dir=str(tmp_path))


def test_item_text_template():
  row = {"title": b"Halo 3", "platform": b"Xbox 360", "brand": b"", "product_type": b"Game",
         "genre": b"Shooter|Action", "franchise": b"", "hardware_type": b"", "multiplayer": b"",
         "categories": b"Video Games\nXbox 360\nGames", "description": b"Finish the fight.",
         "features": b""}
  assert item_text(row) == ("Halo 3 | Platform: Xbox 360 | Type: Game | Genre: Shooter, Action | "
                            "Categories: Video Games > Xbox 360 > Games\nFinish the fight.")


def test_text_fields_pick_the_parts_and_their_order():
  row = {"title": "Halo 3", "platform": "Xbox 360", "genre": "Shooter", "categories": "Games",
         "description": "Finish the fight.", "features": "4 players"}
  assert item_text(row, FIELDS) == item_text(row)
  assert item_text(row, ("title",)) == "Halo 3"
  assert item_text(row, ("description", "title", "attributes")) == (
      "Finish the fight.\nHalo 3 | Platform: Xbox 360 | Genre: Shooter")
  assert item_text(row, ("title", "features", "categories")) == (
      "Halo 3\n4 players\nCategories: Games")


@pytest.mark.parametrize("fields, message", [((), "at least one"), (("title", "title"), "once"),
                                             (("title", "price"), "unknown: \\['price'\\]")])
def test_bad_text_fields_are_named(fields, message):
  with pytest.raises(ValueError, match=message):
    check_fields(fields)
