"""The eval stage on the briefly trained sample LM: restore, metrics.json keys, constrained
decoding quality, mesh independence, prompt hygiene and clear errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from semrec_jax import parallel
from semrec_jax.data import tfds_builders
from semrec_jax.eval import language, prompts, ranking, restore, stage, steering
from semrec_jax.lm import decoding, phrasing, tasks
from semrec_jax.protocol import personalisation
from semrec_jax.lm import tokenizer as tokenizer_lib
from tests.conftest import REPO

RANKING_KEYS = [f"{s}/{m}@{k}" for s in ("validation", "test") for m in ("recall", "ndcg")
                for k in (5, 10, 20)] + ["validation/mrr", "test/mrr"]
EXPECTED_KEYS = set(RANKING_KEYS) | {
    "sampled100/hit@10", "sampled100/ndcg@10", "popularity/test/recall@10",
    "popularity/test/ndcg@10", "popularity/validation/recall@10",
    "popularity/validation/ndcg@10", "invalid_rate", "duplicate_rate",
    "steer/precision@10", "steer/baseline_precision@10", "lang/text_to_sid_accuracy",
    "lang/sid_to_text_match", "lang/explanation_faithfulness", "lang/explanation_users",
    "lang/explanation_related_pick", "lang/explanation_most_taught_reason_faithfulness",
    "lang/bundle_name_accuracy",
    "null_reasons", *personalisation.KEYS} | {f"steer/{k}/{m}" for k in phrasing.STEER_KINDS
                       for m in ("precision@10", "baseline_precision@10", "recall@10")}


@pytest.fixture(scope="module")
def evaluated(evaluated_lm):
  return evaluated_lm


def test_metrics_json_has_every_key_and_constrained_lists(evaluated):
  found, out = evaluated
  with open(out / "metrics.json") as f:
    written = json.load(f)
  assert set(written) == EXPECTED_KEYS
  assert written["invalid_rate"] == 0.0 and written["duplicate_rate"] == 0.0
  for key in RANKING_KEYS:
    assert 0.0 <= written[key] <= 1.0
  assert written["test/recall@5"] <= written["test/recall@10"] <= written["test/recall@20"]
  nulls = {k for k, v in written.items() if v is None}
  assert nulls == set(written["null_reasons"])  # every null metric says why
  assert not any(k.startswith(("steer/platform", "lang/text", "lang/sid")) for k in nulls)
  with open(out / "samples.jsonl") as f:
    samples = [json.loads(line) for line in f]
  kinds = {s["kind"] for s in samples}
  assert {"next_item", "steering", "sid_to_text", "explanation", "bundle"} <= kinds
  first = samples[0]
  assert len(first["recommended"]) == 10 and isinstance(first["target"], str)
  with open(out / "info.json") as f:
    info = json.load(f)
  assert info["step"] == 12 and info["users"] == 24 and info["beam_width"] == 20
  assert info["held_out_items"] == 8  # of the sample's 40 (eval.max_items)


def test_a_checkpoint_restores_on_any_mesh_with_the_same_rankings(trained_lm):
  workdir, config = trained_lm
  records = tfds_builders.read_all(tfds_builders.sequences_source(str(workdir / "data"), "test"))[:16]
  results = []
  for mesh in (parallel.make_mesh(parallel.mesh_config(data=1, fsdp=8)),
               parallel.make_mesh(devices=jax.devices()[:1])):
    lm = restore.load(str(workdir), step=6, mesh=mesh)
    assert lm.step == 6
    leaf = lm.model.groups.blocks[0].mlp.up[...]  # stacked over the scanned groups
    assert len(leaf.sharding.device_set) == mesh.size
    dec = decoding.SidDecoder(lm.model, lm.code_tokens, lm.sid_start, lm.trie, mesh=mesh,
                              batch_size=8)
    texts = [prompts.next_item(r["history"], lm.sids, config.lm.max_history) for r in records]
    results.append(dec.items(prompts.encode(lm.tokenizer, texts), 20))
  np.testing.assert_array_equal(results[0][0], results[1][0])
  np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-4)


def test_prompts_never_hold_the_test_target(trained_lm):
  workdir, config = trained_lm
  lm = restore.load(str(workdir))
  dec = decoding.SidDecoder(lm.model, lm.code_tokens, lm.sid_start, lm.trie, batch_size=8)
  records = tfds_builders.read_all(tfds_builders.sequences_source(str(workdir / "data"), "test"))[:8]
  # Ranking prompts read only the history: records without their target still rank.
  blind = [{"history": r["history"]} for r in records]
  assert ranking.rank(dec, lm, blind, 20, config.lm.max_history).shape == (8, 20)
  seen = []
  original = prompts.encode
  try:
    prompts.encode = lambda tok, texts: seen.extend(texts) or original(tok, texts)
    steering.evaluate(dec, lm, records, ranking.rank(dec, lm, records, 20, 20),
                      steering.attribute_values(lm.items), config.lm.max_history, 0, {})
  finally:
    prompts.encode = original
  assert len(seen) > len(records)
  for r in records:  # the target's own attribute may be asked for, never the target itself
    target = lm.sids[int(r["target"])]
    assert not any(target in text and prompts.history_items(r["history"], lm.sids, 20) in text
                   for text in seen)


def test_explanations_are_of_the_true_next_item_and_its_best_scored_history_item(trained_lm,
                                                                                  evaluated):
  workdir, config = trained_lm
  max_history = config.lm.max_history
  lm = restore.load(str(workdir))
  dec = decoding.SidDecoder(lm.model, lm.code_tokens, lm.sid_start, lm.trie, batch_size=8)
  records = tfds_builders.read_all(tfds_builders.sequences_source(str(workdir / "data"), "test"))[:40]
  attrs = phrasing.item_attributes(lm.items)
  related = lambda a, b: bool(phrasing.common_attributes(attrs[a], attrs[b]))
  explained = [r for r in records if language.explainable(r, attrs, max_history)]
  assert 0 < len(explained) < len(records)  # users whose next item shares nothing are left out
  for r in explained:
    assert any(related(int(r["target"]), int(h)) for h in r["history"][-max_history:])
  # The same users as the explanation task's training examples.
  task = tasks.explanation(records, attrs, lm.sids, max_history, seed=0)
  assert [e["user"] for e in task] == [u for u, r in enumerate(records) if
                                         language.explainable(r, attrs, max_history)]
  assert any(len(r["history"]) < max_history for r in explained[:10])  # the padded case too
  generated, picks = language.explanations(dec, lm, explained[:10], max_history)
  tok, values = lm.tokenizer, language.item_values(lm.items)
  for r, g, pick in zip(explained, generated, picks):
    shown = [int(h) for h in r["history"][-max_history:]]
    target = int(r["target"])
    assert language.parse_items(g, lm.trie)[:2] == [target, pick] and pick in shown
    asked = (prompts.encode(tok, [prompts.explanation(shown, lm.sids, max_history)])[0]
             + prompts.explanation_lead(tok, lm.sids[target]))
    # The lead and the pick are tokenised as the start of a taught answer.
    answer = tok.encode(f"{lm.sids[target]}: like {lm.sids[pick]}, it is for PS4.")
    start = asked[-len(prompts.explanation_lead(tok, lm.sids[target])):]
    assert answer[:len(start) + len(tok.encode(lm.sids[pick]))] == start + tok.encode(
        lm.sids[pick])
    true, claims, parsed = language.explanation_claims(g, lm.trie, values)
    assert parsed["items"] == [target, pick] and 0 <= true <= claims
    # The pick is the history item scored best after "<next item>: like ", scored alone ...
    alone = dec.score([asked], lm.codes[np.array(shown)][None])[0]
    assert pick == shown[int(np.argmax(alone))]
    # ... and the reason is the model's greedy continuation after it, one prompt at a time.
    reason = decoding.greedy(lm.model, asked + tok.encode(lm.sids[pick]), 32, tok.eos_id)
    assert g == f"{lm.sids[target]}: like {lm.sids[pick]}" + tok.decode(
        [t for t in reason if t != tok.eos_id])
  found, out = evaluated
  assert 0 < found["lang/explanation_users"] <= 4  # explain_users in SMALL_EVAL
  assert 0.0 <= found["lang/explanation_related_pick"] <= 1.0
  assert 0.0 <= found["lang/explanation_most_taught_reason_faithfulness"] <= 1.0
  with open(out / "info.json") as f:
    taught = json.load(f)["explanation_most_taught_reason"]
  train = tfds_builders.read_all(tfds_builders.sequences_source(str(workdir / "data"), "train"))
  assert taught == language.most_taught_reason(train, attrs, max_history)
  assert language.claims(taught)  # a reason the metric can check


def test_a_relative_workdir_restores(trained_lm, monkeypatch):
  """Orbax reads arrays only from absolute paths: `--workdir=devwork` once failed in eval."""
  workdir, _ = trained_lm
  monkeypatch.chdir(workdir.parent)
  lm = restore.load(workdir.name, step=6)
  assert lm.step == 6 and len(lm.sids) == lm.codes.shape[0] > 0


def test_missing_or_inconsistent_checkpoints_get_one_clear_line(trained_lm, tmp_path):
  workdir, _ = trained_lm
  with pytest.raises(restore.MissingArtifact, match="no trained LM"):
    restore.load(str(tmp_path))
  with pytest.raises(restore.MissingArtifact, match=r"no checkpoint for step 7 .* \[6, 12\]"):
    restore.load(str(workdir), step=7)
  copy = tmp_path / "copy"
  shutil.copytree(workdir / "lm", copy / "lm")
  proto = tokenizer_lib.load_proto(str(copy / "lm" / "tokenizer.model"))
  proto.pieces[100].score += 1.0  # another (valid) tokenizer
  (copy / "lm" / "tokenizer.model").write_bytes(proto.SerializeToString())
  with pytest.raises(restore.MissingArtifact, match="tokenizer"):
    restore.load(str(copy))
  result = subprocess.run([sys.executable, "-m", "semrec_jax.eval",
                           f"--workdir={tmp_path}/none"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: no trained LM in")
  assert "Traceback" not in result.stderr


def test_report_summarises_every_number_with_live_examples_and_plots(trained_lm, evaluated,
                                                                      tmp_path):
  from semrec_jax.report.stage import report  # pylint: disable=import-outside-toplevel
  trained, config = trained_lm
  found, eval_dir = evaluated
  workdir = tmp_path / "run"
  workdir.mkdir()
  for name in ("data", "ids", "lm"):
    os.symlink(trained / name, workdir / name)
  os.symlink(eval_dir, workdir / "eval")
  (workdir / "report").mkdir()
  lines = report(config, str(workdir), str(workdir / "report"))
  text = "\n".join(lines)
  assert 20 <= len(lines) <= 45
  assert "2,000 items, 19,080 users, 155,133 interactions" in text
  assert "codebook use" in text and "prefix purity" in text
  lm_row = next(line for line in lines if line.strip().startswith("LM (beam 20)"))
  assert f"{found['test/recall@10']:.4f}  {found['test/ndcg@10']:.4f}" in lm_row
  assert f"{found['popularity/test/recall@10']:.4f}" in lm_row
  assert f"platform {found['steer/platform/precision@10']:.2f} / " \
         f"{found['steer/platform/baseline_precision@10']:.2f}" in text
  assert "explanations faithful" in text and "invalid IDs 0%" in text
  for n in (1, 2, 3):
    assert f"example {n}" in text
  assert sum(line.startswith("  1. ") for line in lines) == 2  # two top-5 lists with titles
  written = (workdir / "report" / "summary.txt").read_text()
  assert written.splitlines() == lines
  for name in ("report.md", "report.html", "lm_loss.png", "steering.png", "models.png",
               "code_usage.png"):
    assert (workdir / "report" / name).stat().st_size > 1000, name
  markdown = (workdir / "report" / "report.md").read_text()
  assert "![LM loss](lm_loss.png)" in markdown and lines[0] in markdown
  assert markdown.count("data:image/png;base64") == 0
  assert (workdir / "report" / "report.html").read_text().count("data:image/png;base64,") == 4
