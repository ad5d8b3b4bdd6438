"""The `ids` stage end to end on the bundled sample's real embeddings."""

import json
import os
import shutil

import numpy as np
import pytest

from semrec_jax import defaults, pipeline
from semrec_jax.data import tfds_builders
from semrec_jax.ids import stage as ids_stage
from semrec_jax.ids import trie
from semrec_jax.stages import StageError


@pytest.fixture(scope="module")
def ids_dir(demo_ids):
  return demo_ids


def test_metrics(ids_dir, demo_workdir):
  with open(os.path.join(ids_dir, "metrics.json")) as f:
    m = json.load(f)
  assert m["recipe"] == "default" and m["num_items"] == 2000
  assert m["inputs"] == {"text": 1.0, "collaborative": 2.0}  # text and co-occurrence vectors
  inputs, _ = ids_stage.item_vectors(defaults.base_config().ids, demo_workdir, 2000)
  assert inputs.shape == (2000, 384 + 64)
  # 40 steps with one dead-code restart (step 20, every reset_every = 20 steps but the last): the
  # 150-step demo ends with >= 98% of the codes used at every level.
  assert len(m["codebook_usage"]) == 3 and min(m["codebook_usage"]) >= 0.3
  assert m["collision_rate"] == 0.0 and m["max_collision_group"] == 1
  # Below the inputs' variance (what predicting their mean scores): 0.0087 vs 0.0099 at 40 steps.
  assert m["final_ids_unique"] and 0 < m["recon_mse"] < inputs.var(axis=0).mean()
  assert 0.3 < m["prefix_purity"] <= 1.0
  assert m["best_step"] in (20, 40)
  for name in ("code_usage.png", "collision_groups.png", "history.json", "trie.npz",
               "code_vectors.npy"):
    assert os.path.getsize(os.path.join(ids_dir, name)) > 0
  with open(os.path.join(ids_dir, "history.json")) as f:
    history = json.load(f)
  assert [r["step"] for r in history] == [20, 40]
  assert min(history[0]["codes_reset"]) > 0 and history[1]["codes_reset"] == [0, 0, 0]


def test_semantic_ids_file_and_trie_agree(ids_dir, demo_workdir):
  with open(os.path.join(ids_dir, "semantic_ids.tsv"), encoding="utf-8") as f:
    header, *rows = [line.rstrip("\n").split("\t") for line in f]
  assert header == ["item_index", "item_id", "codes", "tokens"]
  items = tfds_builders.items_source(os.path.join(demo_workdir, "data"))
  assert [r[1] for r in rows] == [items[i]["item_id"].decode() for i in range(len(items))]
  codes = np.array([[int(c) for c in r[2].split()] for r in rows])
  # Three levels and no collision level: the collision-free last level leaves no two items with
  # the same three codes, so `auto` (the default) writes none.
  assert codes.shape == (2000, 3) and codes.max() < 256
  assert len({tuple(c) for c in codes}) == 2000
  c0, c1, c2 = codes[7]
  assert rows[7][3] == f"<|sid_start|><|sid_{c0}|><|sid_{256 + c1}|><|sid_{512 + c2}|><|sid_end|>"
  t = trie.load(os.path.join(ids_dir, "trie.npz"))
  assert t.levels == 3 and all(t.lookup(c) == i for i, c in enumerate(codes))
  vectors = np.load(os.path.join(ids_dir, "code_vectors.npy"))
  assert vectors.shape == (3, 256, 384 + 64)
  assert (np.abs(vectors[0]).sum(1) > 0).sum() == len(set(codes[:, 0]))  # one row per used code


@pytest.mark.parametrize("field, value", [("recipe", "tiger"), ("last_level", "first"),
                                          ("collision_level", "never")])
def test_unknown_recipe_or_last_level_is_refused_before_anything_runs(field, value):
  config = defaults.base_config()
  config.ids[field] = value
  with pytest.raises(StageError, match=f"config.ids.{field}: unknown '{value}'"):
    pipeline.check(config, ["ids"])
  pipeline.check(defaults.base_config(), ["ids"])


def _reassigned(ids_dir, demo_workdir, tmp_path, **ids_settings) -> dict:
  """The demo's `ids` stage into tmp_path with other assignment settings, reusing the trained
  RQ-VAE (its checkpoints are at the last step, so no step runs); returns its metrics."""
  from configs import demo  # pylint: disable=import-outside-toplevel
  config = demo.get_config()
  config.ids.steps, config.ids.eval_every = 40, 20
  config.ids.update(ids_settings)
  shutil.copytree(os.path.join(ids_dir, "checkpoints"), tmp_path / "checkpoints")
  return ids_stage.semantic_ids(config, demo_workdir, str(tmp_path))


def test_nearest_last_level_is_tigers_structure_on_the_same_rqvae(ids_dir, demo_workdir, tmp_path):
  """The trained RQ-VAE is reused (its checkpoints, so no step runs); only the last level's
  assignment changes: every level the nearest code, and the collision level numbers the items
  that then share all three."""
  m = _reassigned(ids_dir, demo_workdir, tmp_path, last_level="nearest")
  with open(os.path.join(ids_dir, "metrics.json")) as f:
    unique = json.load(f)
  assert m["last_level"] == "nearest" and unique["last_level"] == "unique"
  assert m["collision_rate"] == unique["collision_rate_nearest_codes"] > 0
  assert m["recon_mse"] <= unique["recon_mse"] + 1e-6  # nearest codes decode at least as well
  ids = [ids_stage.assign_lib.read_table(os.path.join(d, "semantic_ids.tsv"))[1]
         for d in (ids_dir, str(tmp_path))]
  assert m["collision_level_written"] and ids[1].shape == (2000, 4)  # `auto` writes it here
  assert ids[0].shape == (2000, 3) and (ids[0][:, :2] == ids[1][:, :2]).all()
  shared = (ids[1][:, 3] > 0).sum()
  assert shared > 0 and len({tuple(r) for r in ids[1]}) == 2000
  assert len({tuple(r) for r in ids[1][:, :3]}) == 2000 - shared  # each extra item 1 collision


def test_always_writes_the_collision_level_of_zeros_after_the_same_codes(ids_dir, demo_workdir,
                                                                        tmp_path):
  """`always` (what folders made before the setting hold): the same three codes, then a fourth
  level that is 0 for every item; the trie and code vectors follow the table."""
  m = _reassigned(ids_dir, demo_workdir, tmp_path, collision_level="always")
  auto = ids_stage.assign_lib.read_table(os.path.join(ids_dir, "semantic_ids.tsv"))[1]
  tokens, always = ids_stage.assign_lib.read_table(str(tmp_path / "semantic_ids.tsv"))
  assert m["collision_level_written"] and always.shape == (2000, 4)
  assert (always[:, :3] == auto).all() and (always[:, 3] == 0).all()
  assert tokens[0].endswith("<|sid_768|><|sid_end|>")
  assert trie.load(str(tmp_path / "trie.npz")).levels == 4
  assert np.load(tmp_path / "code_vectors.npy").shape[0] == 4
