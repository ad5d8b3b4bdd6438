"""The prefer stage on the briefly trained tiny LM: off at 0 steps, a run resumed on one device
equal to an uninterrupted one on eight, and a checkpoint that eval restores like the LM."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from semrec_jax import parallel, pipeline, stages
from semrec_jax.eval import compare, restore, stage as eval_stage
from semrec_jax.prefer import rollouts, stage
from semrec_jax.protocol import metrics
from semrec_jax.report import summary

STEPS = 3


def _config(config, **overrides):
  config = config.copy_and_resolve_references()
  config.unlock()
  config.prefer.update({"steps": STEPS, "prompts_per_step": 8, "group_size": 4,
                        "steering_share": 0.5, "explanation_share": 0.25, "bundle_share": 0.125,
                        "checkpoint_every": 1, "rollout_batch_size": 8, "learning_rate": 1e-3,
                        "supervised_weight": 0.5, "update_prompts": 6, **overrides})
  return config


def _lines(out):
  with open(os.path.join(out, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _params(workdir, mesh):
  lm = restore.load(workdir, mesh=mesh, source="prefer")
  return lm, jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(lm.model, nnx.Param)))


@pytest.fixture(scope="module")
def preferred(trained_lm, tmp_path_factory):
  """(workdir, config, metrics lines, params) of an uninterrupted run on the 8-device mesh."""
  workdir, config = trained_lm
  root = tmp_path_factory.mktemp("preferred")
  for name in ("data", "ids", "lm"):
    os.symlink(os.path.join(workdir, name), root / name)
  config = _config(config)
  stage.train_prefer(config, str(root), str(root / "prefer"))
  return str(root), config, _lines(root / "prefer"), _params(str(root), None)[1]


def test_the_stage_trains_from_the_lm_and_eval_restores_it(preferred, trained_lm):
  workdir, _, lines, params = preferred
  assert [r["step"] for r in lines] == list(range(1, STEPS + 1))
  for r in lines:
    assert np.isfinite(r["loss"]) and r["kl"] >= 0.0
    assert 0.0 < r["supervised_nll"] < 20.0  # the next-item prompt's own next item, as taught
    assert 0.0 <= r["reward/steering"] <= 1.0 and -1.0 <= r["reward/next_item"] <= 1.0
    assert 0.0 <= r["reward/explanation"] <= 1.0 and 0.0 <= r["reward/bundle"] <= 1.0
    assert r["varied_groups"] in {i / 8 for i in range(9)}  # of the 8 drawn; the update takes 6
  assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is the LM
  assert lines[-1]["kl"] > 0.0  # step 1 had steering groups with unequal rewards
  lm, _ = _params(workdir, None)
  assert (lm.stage, lm.step) == ("prefer", STEPS)
  supervised = restore.load(str(trained_lm[0]))
  before = nnx.to_pure_dict(nnx.state(supervised.model, nnx.Param))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - np.asarray(b)).max()),
                                       params, before))
  assert max(moved) > 0.0
  info = json.load(open(os.path.join(workdir, "prefer", "info.json")))
  assert (info["steps"], info["prompts_per_step"], info["update_prompts"]) == (STEPS, 8, 6)


def test_a_run_resumed_on_one_device_equals_an_uninterrupted_one_on_eight(preferred, tmp_path,
                                                                         monkeypatch):
  """Stopped before step 3 on the 8-device mesh, resumed on one device: steps 1-2 are the
  uninterrupted run's lines exactly; step 3 and the parameters equal them to the rounding a
  change of mesh brings (a resume that drew other prompts or samples would be far off)."""
  workdir, config, lines, params = preferred
  for name in ("data", "ids", "lm"):
    os.symlink(os.path.join(workdir, name), tmp_path / name)
  out = str(tmp_path / "prefer")
  made = rollouts.training_batch
  calls = []

  def stop_at_the_third_step(*args, **kwargs):
    calls.append(1)
    assert len(args[0]) == 6  # update_prompts of the 8 groups drawn
    if len(calls) == 3:
      assert len(_lines(out)) == 2  # on disk as each step ends, not only when the stage does
      raise KeyboardInterrupt("stopped")
    return made(*args, **kwargs)

  monkeypatch.setattr(rollouts, "training_batch", stop_at_the_third_step)
  with pytest.raises(KeyboardInterrupt):
    stage.train_prefer(config, str(tmp_path), out)
  assert _lines(out) == lines[:2]
  monkeypatch.setattr(rollouts, "training_batch", made)
  one = parallel.make_mesh(devices=jax.devices()[:1])
  stage.train_prefer(config, str(tmp_path), out, mesh=one)
  found = _lines(out)
  assert [r["step"] for r in found] == [1, 2, 3]
  for a, b in zip(found, lines):
    assert a.keys() == b.keys()
    for key in a:
      assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key
  # Adam divides by tiny second moments: 2 of 131,072 entries moved 3e-5 apart (steps: 3e-3).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
               _params(str(tmp_path), one)[1], params)


def test_off_by_default_and_bad_settings_are_one_line(trained_lm, tmp_path):
  _, config = trained_lm
  assert config.prefer.steps == 0
  info = stage.train_prefer(config, str(tmp_path), str(tmp_path))
  assert info["steps"] == 0 and not os.path.exists(tmp_path / "checkpoints")
  for bad in ({"group_size": 1}, {"steering_share": 1.5}, {"steps": -1},
              {"steering_share": 0.6, "explanation_share": 0.6}, {"bundle_share": -0.1},
              {"steering_share": 0.5, "bundle_share": 0.6}, {"text_temperature": 0.0},
              {"prefix_credit": 1.5}, {"compared_temperature": 0.0}, {"supervised_weight": -1},
              {"micro_batches": 0}, {"update_prompts": 9}, {"update_prompts": -1}):
    with pytest.raises(stages.StageError, match="config.prefer"):
      pipeline.check(_config(config, **bad), ["prefer"])
  with pytest.raises(stages.StageError, match="steering_share is 1.0 by default: lower it"):
    pipeline.check(_config(config, steering_share=1.0, explanation_share=0.3), ["prefer"])
  with pytest.raises(stages.StageError, match="the 20 rollouts an update trains on .* do not "
                     "split into micro_batches 1 x 8 data devices"):
    stage.train_prefer(_config(config, update_prompts=5), str(trained_lm[0]),
                       str(tmp_path / "prefer"))
  with pytest.raises(stages.StageError, match="supervised_weight > 0 keeps the supervised"):
    stage.train_prefer(_config(config, steering_share=1.0, explanation_share=0.0,
                               bundle_share=0.0), str(trained_lm[0]), str(tmp_path / "prefer"))


def test_eval_measures_the_lm_and_the_preference_checkpoint_on_the_same_users(preferred,
                                                                              tmp_path, capsys):
  workdir, config, _, _ = preferred
  config = config.copy_and_resolve_references()
  config.eval.update({"max_users": 8, "steer_users": 4, "explain_users": 2, "max_bundles": 2,
                      "max_items": 4, "sampled_negatives": 0, "batch_size": 8})
  out = tmp_path / "eval"
  found = eval_stage.evaluate(config, workdir, str(out))
  read = lambda *parts: json.load(open(os.path.join(out, *parts)))
  assert read("metrics.json") == found
  preferred_found = read("prefer", "metrics.json")
  paired = {k for k in preferred_found if k.startswith("minus_lm/")}
  assert preferred_found.keys() - paired == found.keys()
  # The paired difference is of the two models' lists for the same users, read back from disk.
  lists = [dict(np.load(os.path.join(out, *folder, "ranked.npz")))
           for folder in ((), ("prefer",))]
  np.testing.assert_array_equal(lists[0]["users"], lists[1]["users"])
  assert lists[0]["test"].shape == (8, 20)
  for split in config.eval.splits:
    np.testing.assert_array_equal(lists[0][f"{split}_targets"], lists[1][f"{split}_targets"])
    want = metrics.paired_difference(lists[0][split], lists[1][split],
                                     lists[0][f"{split}_targets"], f"minus_lm/{split}")
    assert {k: preferred_found[k] for k in want} == pytest.approx(want, abs=1e-5)
    assert preferred_found[f"minus_lm/{split}/ndcg@10"] == pytest.approx(
        preferred_found[f"{split}/ndcg@10"] - found[f"{split}/ndcg@10"], abs=2e-5)
  # The same comparison between any two eval folders of the same users (here the two above).
  compared = compare.compare(str(out), str(out / "prefer"))
  assert compared.pop("users") == 8
  assert compared == pytest.approx({k.removeprefix("minus_lm/"): v for k, v in
                                    preferred_found.items() if k in paired}, abs=1e-5)
  compare.main(["compare", str(out), str(out / "prefer")])
  assert "B minus A on the 8 users both measured" in capsys.readouterr().out
  # Folders of other users pair on those both measured; none in common, or other targets: refused.
  other = tmp_path / "other"
  other.mkdir()
  np.savez(other / "ranked.npz", **{k: v[:5] for k, v in lists[1].items()})
  subset = compare.compare(str(out), str(other))
  assert subset.pop("users") == 5
  assert subset["test/ndcg@10"] == pytest.approx(metrics.paired_difference(
      lists[0]["test"][:5], lists[1]["test"][:5], lists[1]["test_targets"][:5], "t")["t/ndcg@10"])
  np.savez(other / "ranked.npz", **{**lists[1], "users": lists[1]["users"] + 10**6})
  with pytest.raises(compare.NotComparable, match="no user measured in both"):
    compare.compare(str(out), str(other))
  np.savez(other / "ranked.npz", **{**lists[1], "test_targets": lists[1]["test_targets"] + 1})
  with pytest.raises(compare.NotComparable, match="different test targets"):
    compare.compare(str(out), str(other))
  with pytest.raises(SystemExit, match="ranked.npz: not found"):
    compare.main(["compare", str(out), str(tmp_path)])
  lm_info, prefer_info = read("info.json"), read("prefer", "info.json")
  assert (lm_info["stage"], prefer_info["stage"], prefer_info["step"]) == ("all", "prefer", STEPS)
  assert prefer_info["users"] == lm_info["users"] == 8
  os.symlink(out, os.path.join(workdir, "eval"))
  text = "\n".join(summary.lines(workdir, summary.collect(workdir), []))
  assert "LM (beam 20)" in text and "LM + prefer (beam 20)" in text
  assert "language   LM + prefer explanations faithful" in text
  assert "LM + prefer minus LM, NDCG@10 on the same users: validation " in text
