"""The `embed` stage: encoder output on the bundled sample and precomputed-embedding import."""

import json
import os

import numpy as np
import pytest

from semrec_jax import defaults
from semrec_jax.data.errors import DataError
from semrec_jax.embed.stage import embed, read_precomputed


def test_encoder_embeddings_of_the_sample(demo_workdir):
  out = os.path.join(demo_workdir, "embeddings")
  vectors = np.load(os.path.join(out, "items.npy"))
  with open(os.path.join(out, "item_ids.txt")) as f:
    ids = f.read().split()
  assert vectors.shape == (2000, 384) and vectors.dtype == np.float32 and len(ids) == 2000
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
  with open(os.path.join(out, "info.json")) as f:
    assert json.load(f)["num_items"] == 2000
  # Items with the same title and attributes embed identically; different ones do not.
  assert len(np.unique(vectors.round(5), axis=0)) > 1900


def _write(tmp_path, matrix, ids):
  np.save(tmp_path / "e.npy", matrix)
  (tmp_path / "ids.txt").write_text("".join(i + "\n" for i in ids))
  return str(tmp_path / "e.npy"), str(tmp_path / "ids.txt")


def test_precomputed_rows_follow_item_order(tmp_path):
  matrix = np.arange(12, dtype=np.float64).reshape(4, 3)
  npy, ids = _write(tmp_path, matrix, ["d", "b", "a", "c"])
  out, info = read_precomputed(npy, ids, ["a", "b", "c"])
  np.testing.assert_array_equal(out, matrix[[2, 1, 3]])
  assert out.dtype == np.float32 and info["unused_rows"] == 1


@pytest.mark.parametrize("matrix, ids, message", [
    (np.ones((3, 2)), ["a", "b"], "has 2 ids but .* has 3 rows"),
    (np.ones(3), ["a", "b", "c"], "expected a 2-D float array"),
    (np.array([[1.0, np.nan], [0, 0], [0, 0]]), ["a", "b", "c"], "1 rows hold NaN or inf.*'a'"),
    (np.ones((2, 2)), ["a", "b"], r"no embedding for 1 catalog items, e.g. \['c'\]"),
    (np.ones((3, 2)), ["a", "a", "b"], "1 repeated ids"),
])
def test_precomputed_bad_input(tmp_path, matrix, ids, message):
  npy, ids_path = _write(tmp_path, matrix, ids)
  with pytest.raises(DataError, match=message):
    read_precomputed(npy, ids_path, ["a", "b", "c"])


def test_precomputed_stage_and_missing_file(demo_workdir, tmp_path):
  with open(os.path.join(demo_workdir, "embeddings", "item_ids.txt")) as f:
    ids = f.read().split()
  rng = np.random.default_rng(0)
  matrix = rng.normal(size=(len(ids), 16)).astype(np.float32)
  order = rng.permutation(len(ids))
  npy, ids_path = _write(tmp_path, matrix[order], [ids[i] for i in order])
  config = defaults.base_config()
  config.embed.source, config.embed.precomputed_npy = "precomputed", npy
  config.embed.precomputed_ids = ids_path
  out = tmp_path / "out"
  out.mkdir()
  embed(config, demo_workdir, str(out))
  np.testing.assert_array_equal(np.load(out / "items.npy"), matrix)
  config.embed.precomputed_npy = str(tmp_path / "missing.npy")
  with pytest.raises(DataError, match="missing.npy' not found"):
    embed(config, demo_workdir, str(out))


def test_an_interrupted_embedding_resumes_at_the_first_missing_part(tmp_path, monkeypatch):
  from semrec_jax.embed import stage as embed_stage  # pylint: disable=import-outside-toplevel
  from semrec_jax.embed.encoder import TextEncoder  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(embed_stage, "CHUNK", 4)
  encoder = TextEncoder(batch_size=4)
  texts = [f"item {i}: a game for PS{i % 5}" for i in range(10)]
  reference = embed_stage.encode_resumably(encoder, texts, str(tmp_path / "a"))
  assert reference.shape == (10, 384) and not (tmp_path / "a").exists()  # parts cleaned up
  partial = tmp_path / "b"
  partial.mkdir()
  np.save(partial / "000000000.npy", reference[:4])  # what a killed run had saved
  calls = []
  real = encoder.encode
  monkeypatch.setattr(encoder, "encode", lambda t: calls.append(len(t)) or real(t))
  resumed = embed_stage.encode_resumably(encoder, texts, str(partial))
  assert calls == [4, 2]  # parts 2 and 3 only
  np.testing.assert_allclose(resumed, reference, atol=1e-5)


def test_text_fields_choose_what_the_encoder_reads(demo_workdir, tmp_path, monkeypatch):
  from semrec_jax.embed import stage as embed_stage  # pylint: disable=import-outside-toplevel
  from semrec_jax.embed.encoder import TextEncoder  # pylint: disable=import-outside-toplevel
  rows = embed_stage.catalog_rows(demo_workdir)[:6]
  monkeypatch.setattr(embed_stage, "catalog_rows", lambda workdir: rows)
  config = defaults.base_config()
  config.embed.text_fields = ("title",)
  config.embed.collaborative_dim = 0
  info = embed(config, demo_workdir, str(tmp_path))
  titles = [r["title"].decode() for r in rows]
  np.testing.assert_allclose(np.load(tmp_path / "items.npy"), TextEncoder().encode(titles),
                             atol=1e-5)
  assert info["text_fields"] == ["title"] and info["num_items"] == 6


def test_bad_text_fields_are_refused_before_anything_runs():
  from semrec_jax import pipeline  # pylint: disable=import-outside-toplevel
  from semrec_jax.stages import StageError  # pylint: disable=import-outside-toplevel
  config = defaults.base_config()
  config.embed.text_fields = ("title", "price")
  with pytest.raises(StageError, match=r"config.embed.text_fields: \['title', 'price'\]"):
    pipeline.check(config, ["embed"])
