"""The whole default pipeline on a user's catalog in the generic layout: real items with titles
but no attributes (no platform, brand, genre or product type), every title made 150+ tokens long.
Tasks that need attributes leave the LM mixture, metrics that cannot be computed are null with a
reason, titles are cut to fit seq_len (the evaluation asks and scores with the cut titles), and
everything else is measured; a seq_len too short for what cannot be cut stops the lm stage before
its first step, in one line."""

import csv
import gzip
import json
import os
import re

import pytest

from configs import demo
from semrec_jax import defaults, pipeline, stages
from semrec_jax.lm import input_pipeline, phrasing
from semrec_jax.lm import tasks
from semrec_jax.lm import tokenizer as tokenizer_lib
from tests.lm.test_lengths import _long_title
from tests.test_main import _main

NUM_ITEMS = 600  # the sample's first 600 items, titles only


def _write_plain_catalog(folder, long_titles: bool = False):
  with gzip.open(os.path.join(defaults.SAMPLE_DIR, "items.csv.gz"), "rt", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))[:NUM_ITEMS]
  known = {r["asin"] for r in rows}
  with open(folder / "items.jsonl", "w", encoding="utf-8") as f:
    for i, r in enumerate(rows):
      title = f"{r['title']} - {_long_title(i)}" if long_titles else r["title"]
      f.write(json.dumps({"item_id": r["asin"], "title": title}) + "\n")
  with gzip.open(os.path.join(defaults.SAMPLE_DIR, "sequences.tsv.gz"), "rt") as f, \
      open(folder / "interactions.csv", "w", encoding="utf-8") as out:
    out.write("user_id,item_id,timestamp\n")
    for line in list(f)[1:6001]:
      user, asins = line.rstrip("\n").split("\t")
      for t, asin in enumerate(a for a in asins.split() if a in known):
        out.write(f"{user},{asin},{t}\n")


@pytest.mark.slow
def test_default_pipeline_on_a_catalog_without_attributes_and_with_very_long_titles(tmp_path,
                                                                                    caplog):
  raw = tmp_path / "raw"
  raw.mkdir()
  _write_plain_catalog(raw, long_titles=True)
  config = demo.get_config()
  config.data.format, config.data.path, config.data.kcore = "generic", str(raw), 3
  config.embed.max_length = 32  # long titles: the encoder reads their start
  config.ids.steps, config.ids.eval_every = 30, 15
  config.lm.stage_steps, config.lm.checkpoint_every, config.lm.eval_every = (10,), 10, 10
  config.lm.eval_examples = 8
  config.baselines.update(steps=10, eval_every=5, val_users=50, max_users=50,
                          sampled_negatives=50)
  config.eval.update(max_users=16, steer_users=8, explain_users=4, max_bundles=4, max_items=8,
                     sampled_negatives=50, batch_size=8)
  workdir = tmp_path / "w"
  with caplog.at_level("INFO"):
    stages.run(config, str(workdir), list(pipeline.STAGES), pipeline.STAGES)
  with open(workdir / "ids" / "metrics.json") as f:
    ids = json.load(f)
  assert ids["prefix_purity"] is None and ids["prefix_purity_reason"] == "no item has a platform"
  left_out = [r.getMessage() for r in caplog.records if "left out of the mixture" in r.getMessage()]
  assert any(m.startswith("lm task steering: no training examples") for m in left_out)
  assert any(m.startswith("lm task bundle: no training examples") for m in left_out)
  for name in ("popularity", "sasrec_id", "sasrec_sid"):
    with open(workdir / "baselines" / name / "metrics.json") as f:
      assert 0.0 <= json.load(f)["test/recall@10"] <= 1.0
  with open(workdir / "eval" / "metrics.json") as f:
    m = json.load(f)
  assert m["invalid_rate"] == 0.0 and m["duplicate_rate"] == 0.0
  assert 0.0 <= m["test/recall@10"] <= 1.0 and 0.0 <= m["lang/text_to_sid_accuracy"] <= 1.0
  for kind in ("platform", "genre", "brand", "product_type"):
    assert m[f"steer/{kind}/precision@10"] is None
    assert "no " + kind in m["null_reasons"][f"steer/{kind}/precision@10"]
  assert m["steer/precision@10"] is None and m["lang/bundle_name_accuracy"] is None
  assert m["lang/explanation_users"] == 0 and m["lang/explanation_faithfulness"] is None
  assert "shares an attribute" in m["null_reasons"]["lang/explanation_faithfulness"]
  assert set(m["null_reasons"]) == {k for k, v in m.items() if v is None}
  # The report stage ran last: its summary has every model's numbers from their metrics files.
  summary = (workdir / "report" / "summary.txt").read_text().splitlines()
  for name in ("popularity", "sasrec_id", "sasrec_sid"):
    with open(workdir / "baselines" / name / "metrics.json") as f:
      b = json.load(f)
    row = next(line for line in summary if line.strip().startswith(name + " "))
    assert f"{b['test/recall@10']:.4f}  {b['test/ndcg@10']:.4f}" in row
  row = next(line for line in summary if line.strip().startswith("LM (beam 20)"))
  assert f"{m['test/recall@10']:.4f}  {m['test/ndcg@10']:.4f}" in row
  assert not any(line.startswith("steering") for line in summary)  # nothing to steer by
  assert any(line.startswith("example 1") for line in summary)
  assert not any(line.startswith("example 2") for line in summary)  # no platform to ask for
  assert (workdir / "report" / "report.html").stat().st_size > 10_000

  # Every title is 150+ of the LM's own tokens; each was trained and scored cut to fit seq_len.
  with open(raw / "items.jsonl", encoding="utf-8") as f:
    titles = [json.loads(line)["title"] for line in f]
  tokenizer = tokenizer_lib.Tokenizer(str(workdir / "lm" / "tokenizer.model"))
  assert min(len(tokenizer.encode(t)) for t in titles) >= 150
  with open(workdir / "eval" / "samples.jsonl", encoding="utf-8") as f:
    samples = [json.loads(line) for line in f]
  taught = [(s["item"], s["title"]) for s in samples if s["kind"] == "sid_to_text"]
  assert taught and all(t.endswith(phrasing.MARKER) for _, t in taught)
  sids = tasks.load_sids(str(workdir / "ids" / "semantic_ids.tsv"))
  for item, title in taught:  # as long as fits: the title as trained on
    assert any(t.startswith(title[:-1]) for t in titles)
    example = {"prompt": phrasing.SID_TO_TEXT["title"][0].format(sid=sids[item]), "answer": title}
    assert len(input_pipeline.tokenize(example, tokenizer, 128)["tokens"]) > 100

  # What cannot be cut (a history item's ID) does not fit seq_len=24: one line, before step 1.
  short = _main(f"--workdir={workdir}", "--config=configs/demo.py",
                "--config.data.format=generic", f"--config.data.path={raw}", "--stages=lm",
                "--overwrite", "--config.lm.seq_len=24")
  lines = short.stderr.strip().splitlines()
  assert short.returncode == 1 and len(lines) == 1, short.stderr[-3000:]
  assert re.fullmatch(r"error: lm: a next_item example with one history item needs seq_len=\d+, "
                      r"more than config.lm.seq_len=24 .*pass --config.lm.seq_len=\d+ or more",
                      lines[0])
  assert short.stdout == "lm: running\n"  # no step taken
  assert not (workdir / ".lm.incomplete").exists()  # nothing to resume is left to refuse
  assert (workdir / "lm" / "info.json").exists()  # the finished run stays
