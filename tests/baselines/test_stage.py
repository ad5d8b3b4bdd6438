"""The baselines stage on the bundled sample: rows never leak held-out items, every loss falls,
sharded training equals one device, and metrics.json has the eval stage's key names."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from semrec_jax import defaults, parallel
from semrec_jax.baselines import sequences, stage as stage_lib
from semrec_jax.baselines.trainer import Trainer
from semrec_jax.data import tfds_builders
from semrec_jax.eval import compare
from semrec_jax.ids import assign
from semrec_jax.protocol import metrics as protocol_metrics
from semrec_jax.protocol import personalisation, ranked_lists
from semrec_jax.stages import StageError


@pytest.fixture(scope="module")
def splits(demo_workdir):
  data_dir = os.path.join(demo_workdir, "data")
  return {split: tfds_builders.read_all(tfds_builders.sequences_source(data_dir, split))
          for split in ("train", "validation", "test")}


def _config(**overrides):
  c = defaults.base_config().baselines
  c.update({"max_len": 10, "steps": 12, "eval_every": 6, "batch_size": 64, "warmup_steps": 2,
            "val_users": 200, "max_users": 200, "sampled_negatives": 100, **overrides})
  return c


def test_training_rows_never_hold_a_validation_or_test_item(splits):
  num_items = 2000
  inputs, targets = sequences.train_rows(splits["train"], num_items, max_len=50)
  checked = 0
  for u, test in enumerate(splits["test"]):
    full = [int(i) for i in test["history"]] + [int(test["target"])]
    if len(full) > 50:  # the test history is truncated: the full sequence is not known here
      continue
    seen = [int(i) for i in inputs[u] if i != num_items] + [int(targets[u][-1])]
    assert seen == full[:-2], u  # exactly the sequence without its validation and test items
    assert [int(t) for t in targets[u] if t != sequences.IGNORE] == seen[1:]
    checked += 1
  assert checked > 0.95 * len(splits["test"])
  val = sequences.history_rows(splits["validation"][:3], num_items, 10)
  assert val.shape == (3, 10) and (val[:, -1] == [int(r["history"][-1])
                                                    for r in splits["validation"][:3]]).all()


@pytest.mark.parametrize("name,loss,sid_model", [
    ("sasrec_id", "ce", None), ("sasrec_id", "sampled", None), ("sasrec_id", "bce", None),
    ("sasrec_sid", "ce", "levels"), ("sasrec_sid", "ce", "composed")])
def test_loss_falls(splits, demo_ids, name, loss, sid_model):
  c = _config(loss=loss, learning_rate=3e-3, sid_model=sid_model or "levels")
  codes = assign.read_table(os.path.join(demo_ids, "semantic_ids.tsv"))[1]
  trainer = Trainer(stage_lib.build(name, c, 2000, codes), c, parallel.make_mesh())
  inputs, targets = sequences.train_rows(splits["train"][:512], 2000, c.max_len)
  rows = np.arange(64)
  first = float(trainer.step(inputs[rows], targets[rows], 0))
  for step in range(1, 30):
    last = float(trainer.step(inputs[rows], targets[rows], step))
  assert last < 0.8 * first, (first, last)


@pytest.mark.parametrize("name", ["sasrec_id", "sasrec_sid"])
def test_sharded_training_equals_one_device(splits, demo_ids, name):
  assert jax.device_count() == 8
  c = _config(dropout=0.2, sid_model="composed")  # its MLP splits over the tensor axis
  codes = assign.read_table(os.path.join(demo_ids, "semantic_ids.tsv"))[1]
  inputs, targets = sequences.train_rows(splits["train"][:64], 2000, c.max_len)
  results = []
  meshes = [parallel.make_mesh(devices=jax.devices()[:1]),
            parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2))]
  if name == "sasrec_id":  # the data-parallel default as well (the same for both models)
    meshes.append(parallel.make_mesh())
  for mesh in meshes:
    trainer = Trainer(stage_lib.build(name, c, 2000, codes), c, mesh)
    found = [float(trainer.step(inputs, targets, step)) for step in range(3)]
    rows = sequences.history_rows(splits["test"][:16], 2000, c.max_len)
    top, _ = trainer.rank(rows, np.zeros((16, 1), np.int64), 10, 8)
    results.append((found, np.asarray(nnx.state(trainer.model, nnx.Param)["embedding"][...]), top))
  for losses, table, top in results[1:]:
    np.testing.assert_allclose(losses, results[0][0], rtol=2e-5)
    np.testing.assert_allclose(table, results[0][1], atol=2e-5)
    assert (top == results[0][2]).all()


def test_stage_writes_the_eval_metric_names_and_resumes(demo_workdir, demo_ids, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  os.symlink(os.path.join(demo_workdir, "data"), workdir / "data")
  os.symlink(demo_ids, workdir / "ids")
  config = defaults.base_config()
  config.baselines = _config()
  out = workdir / "baselines"
  results = stage_lib.baselines(config, str(workdir), str(out))
  keys = ({f"{s}/{m}@{k}" for s in ("validation", "test") for m in ("recall", "ndcg")
           for k in (5, 10, 20)} | {"validation/mrr", "test/mrr", "sampled100/hit@10",
                                    "sampled100/ndcg@10", *personalisation.KEYS})
  for name in ("popularity", "sasrec_id", "sasrec_sid"):
    with open(out / name / "metrics.json") as f:
      assert set(json.load(f)) == keys
    assert results[name]["test/recall@10"] >= 0
  info = json.loads((out / "sasrec_id" / "info.json").read_text())
  assert info["users"] == 200 and info["steps"] == 12 and [r["step"] for r in info["history"]] == [6, 12]
  assert os.listdir(out / "sasrec_id" / "checkpoints" / "best") == [str(info["best_step"])]
  # Popularity by hand: the 10 most frequent training items.
  counts = np.bincount(np.concatenate([np.append(r["history"], r["target"]) for r in
                                       tfds_builders.read_all(tfds_builders.sequences_source(
                                           os.path.join(demo_workdir, "data"), "train"))]),
                       minlength=2000)
  top10 = set(np.argsort(-counts, kind="stable")[:10].tolist())
  test = tfds_builders.read_all(tfds_builders.sequences_source(os.path.join(demo_workdir, "data"), "test"))
  users = protocol_metrics.users_to_evaluate(len(test), 200, 0)
  hits = np.mean([int(test[int(u)]["target"]) in top10 for u in users])
  assert results["popularity"]["test/recall@10"] == pytest.approx(hits, abs=1e-5)
  # One list for all: Jaccard 1, 10 items of the catalog, all among the 100 most bought.
  assert [results["popularity"][k] for k in personalisation.KEYS] == [1.0, 10 / 2000, 1.0]
  assert results["sasrec_id"]["top10/pairwise_jaccard"] < 1.0
  # Each model's lists are kept: they give back its metrics, and pair with another model's.
  lists = ranked_lists.load(str(out / "sasrec_id"))
  np.testing.assert_array_equal(lists["users"], users)
  assert lists["test"].shape == (200, 20)
  found = protocol_metrics.ranking_metrics(lists["test"], lists["test_targets"], "test")
  assert found["test/ndcg@10"] == pytest.approx(results["sasrec_id"]["test/ndcg@10"], abs=1e-5)
  paired = compare.compare(str(out / "popularity"), str(out / "sasrec_id"))
  assert paired["users"] == 200
  assert paired["test/recall@10"] == pytest.approx(
      results["sasrec_id"]["test/recall@10"] - results["popularity"]["test/recall@10"], abs=2e-5)
  # A second run finds every model measured and trains nothing.
  mtime = os.path.getmtime(out / "sasrec_id" / "metrics.json")
  assert stage_lib.baselines(config, str(workdir), str(out)) == results
  assert os.path.getmtime(out / "sasrec_id" / "metrics.json") == mtime


def test_unknown_model_or_loss_is_one_clear_error(tmp_path):
  config = defaults.base_config()
  config.baselines.models = ("popularity", "gru4rec")
  with pytest.raises(StageError, match=r"unknown models \['gru4rec'\]"):
    stage_lib.baselines(config, str(tmp_path), str(tmp_path / "out"))
  config.baselines.models, config.baselines.loss = ("sasrec_id",), "hinge"
  with pytest.raises(StageError, match=r"loss 'hinge' \(known: \('ce', 'sampled', 'bce'\)\)"):
    stage_lib.baselines(config, str(tmp_path), str(tmp_path / "out"))
  config.baselines.loss, config.baselines.sid_model = "ce", "tiger"
  with pytest.raises(StageError, match=r"sid_model 'tiger' \(known: \('levels', 'composed'\)\)"):
    stage_lib.baselines(config, str(tmp_path), str(tmp_path / "out"))


def test_an_interrupted_training_resumes_to_the_same_model(splits, tmp_path):
  from semrec_jax.baselines.trainer import train  # pylint: disable=import-outside-toplevel
  inputs, targets = sequences.train_rows(splits["train"][:512], 2000, 10)
  val_rows = sequences.history_rows(splits["validation"][:64], 2000, 10)
  val_targets = np.asarray([int(r["target"]) for r in splits["validation"][:64]])

  def run(steps, folder):
    c = _config(steps=steps, eval_every=4, patience=100)
    trainer = Trainer(stage_lib.build("sasrec_id", c, 2000, None), c, parallel.make_mesh())
    result = train(trainer, inputs, targets, val_rows, val_targets, str(folder), "sasrec_id")
    return result, np.asarray(nnx.state(result.trainer.model, nnx.Param)["embedding"][...])

  whole, whole_table = run(12, tmp_path / "whole")
  run(8, tmp_path / "cut")  # killed after step 8: its latest checkpoint is step 8
  resumed, resumed_table = run(12, tmp_path / "cut")
  assert [r["val_ndcg@10"] for r in resumed.history] == [r["val_ndcg@10"] for r in whole.history]
  assert resumed.best_step == whole.best_step
  np.testing.assert_allclose(resumed_table, whole_table, atol=1e-6)


@pytest.mark.parametrize("sid_model", ["levels", "composed"])
def test_sid_dim_widens_only_the_semantic_id_model(demo_ids, sid_model):
  codes = assign.read_table(os.path.join(demo_ids, "semantic_ids.tsv"))[1]
  c = _config(sid_model=sid_model, sid_dim=96)
  sid = stage_lib.build("sasrec_sid", c, 2000, codes)
  item = stage_lib.build("sasrec_id", c, 2000, None)
  assert sid.config.dim == 96 and item.config.dim == 64
  assert codes.shape == (2000, 3) and sid.embedding[...].shape == (3, 257, 96)  # a row per code
  assert stage_lib.build("sasrec_sid", _config(sid_model=sid_model), 2000, codes).config.dim == 64
