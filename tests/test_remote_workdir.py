"""The whole default pipeline, as `semrec_jax.main` runs it, on a `gs://` workdir (an in-memory
Cloud Storage emulator) and on a user's catalog in the generic layout: real items with titles but
no attributes (no platform, brand, genre or product type), every title made 150+ tokens long.

One run checks both sides of what a new user brings:
- the bucket: three clients talk to it (tests/gcs_emulator.py), and nothing may land on the local
  disk under a `gs:` folder, which is what os.path calls on a bucket path silently do;
- the catalog: tasks that need attributes leave the LM mixture, metrics that cannot be computed are
  null with a reason, titles are cut to fit seq_len (the evaluation asks and scores with the cut
  titles), everything else is measured, and a seq_len too short for what cannot be cut stops the
  lm stage before its first step, in one line.
"""

import csv
import gzip
import json
import os
import re
import subprocess
import sys

import pytest

from semrec_jax import defaults
from semrec_jax.lm import input_pipeline, phrasing, tasks
from semrec_jax.lm import tokenizer as tokenizer_lib
from tests.conftest import REPO
from tests.lm.test_lengths import _long_title

pytest.importorskip("gcp_storage_emulator")
from tests import gcs_emulator  # noqa: E402  pylint: disable=wrong-import-position

BUCKET = gcs_emulator.BUCKET
NUM_ITEMS = 600  # the sample's first 600 items, titles only


@pytest.fixture(scope="module")
def bucket_env():
  """Starts the emulator; returns the environment that sends every client to it."""
  server, env = gcs_emulator.start()
  yield env
  server.stop()


def _write_plain_catalog(folder) -> list[str]:
  """The generic layout's two files in `folder`; returns the items' short (original) titles."""
  with gzip.open(os.path.join(defaults.SAMPLE_DIR, "items.csv.gz"), "rt", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))[:NUM_ITEMS]
  known = {r["asin"] for r in rows}
  with open(folder / "items.jsonl", "w", encoding="utf-8") as f:
    for i, r in enumerate(rows):
      f.write(json.dumps({"item_id": r["asin"], "title": f"{r['title']} - {_long_title(i)}"})
              + "\n")
  with gzip.open(os.path.join(defaults.SAMPLE_DIR, "sequences.tsv.gz"), "rt") as f, \
      open(folder / "interactions.csv", "w", encoding="utf-8") as out:
    out.write("user_id,item_id,timestamp\n")
    for line in list(f)[1:6001]:
      user, asins = line.rstrip("\n").split("\t")
      for t, asin in enumerate(a for a in asins.split() if a in known):
        out.write(f"{user},{asin},{t}\n")
  return [r["title"] for r in rows]


def _run(module, env, cwd, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                        env={**os.environ, "PYTHONPATH": REPO, "SEMREC_CACHE": str(cwd / "cache"),
                             **env},
                        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_default_pipeline_on_a_bucket_with_a_plain_catalog_of_very_long_titles(
    bucket_env, tmp_path, monkeypatch):
  raw = tmp_path / "raw"
  raw.mkdir()
  short_titles = _write_plain_catalog(raw)
  workdir = f"gs://{BUCKET}/run"
  flags = [f"--config={REPO}/configs/demo.py", f"--workdir={workdir}",
           "--config.data.format=generic", f"--config.data.path={raw}", "--config.data.kcore=3",
           "--config.embed.max_length=32",  # long titles: the encoder reads their start
           "--config.ids.steps=30", "--config.ids.eval_every=15",
           "--config.baselines.steps=10", "--config.baselines.eval_every=5",
           "--config.baselines.val_users=50", "--config.baselines.max_users=50",
           "--config.baselines.sampled_negatives=50", "--config.lm.stage_steps=(10,)",
           "--config.lm.checkpoint_every=5", "--config.lm.eval_every=10",
           "--config.lm.eval_examples=8", "--config.eval.max_users=16",
           "--config.eval.steer_users=8", "--config.eval.explain_users=4",
           "--config.eval.max_bundles=4", "--config.eval.max_items=8",
           "--config.eval.sampled_users=4",
           "--config.eval.sampled_negatives=50", "--config.eval.batch_size=8"]
  run = _run("semrec_jax.main", bucket_env, tmp_path, *flags)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  assert not os.path.exists(tmp_path / "gs:"), "a stage wrote a bucket path to the local disk"
  assert "== semrec_jax: what this run made" in run.stdout
  assert len(os.listdir(tmp_path / "cache")) == 2  # the datasets, copied once for reading

  for name, value in bucket_env.items():
    monkeypatch.setenv(name, value)
  from semrec_jax import storage  # pylint: disable=import-outside-toplevel
  from semrec_jax.data import tfds_builders  # pylint: disable=import-outside-toplevel
  root = storage.path(workdir)
  stats = storage.read_json(root / "data" / "stats.json")
  assert len(tfds_builders.items_source(str(root / "data"))) == stats["num_items"]
  assert storage.load_array(root / "embeddings" / "items.npy").shape[0] == stats["num_items"]
  lines = storage.read_text(root / "lm" / "metrics.jsonl").splitlines()
  assert [json.loads(line)["step"] for line in lines if '"loss"' in line][-1] == 10
  assert (root / "lm" / "checkpoints").is_dir() and (root / "report" / "report.html").exists()
  assert any(p.name.startswith("events.") for p in (root / "lm" / "tensorboard").iterdir())
  log = storage.read_text(root / "logs" / "main.0.log")
  assert "lm: running" in log
  for stage in ("prepare", "embed", "ids", "baselines", "lm", "prefer", "eval", "report"):
    assert not (root / f".{stage}.incomplete").exists()

  # No attributes: what needs them is left out or null, with the reason.
  ids = storage.read_json(root / "ids" / "metrics.json")
  assert ids["prefix_purity"] is None and ids["prefix_purity_reason"] == "no item has a platform"
  assert "lm task steering: no training examples" in log
  assert "lm task bundle: no training examples" in log
  baselines = {name: storage.read_json(root / "baselines" / name / "metrics.json")
               for name in ("popularity", "sasrec_id", "sasrec_sid")}
  for b in baselines.values():
    assert 0.0 <= b["test/recall@10"] <= 1.0
  m = storage.read_json(root / "eval" / "metrics.json")
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
  summary = storage.read_text(root / "report" / "summary.txt").splitlines()
  for name, b in baselines.items():
    row = next(line for line in summary if line.strip().startswith(name + " "))
    assert f"{b['test/recall@10']:.4f}  {b['test/ndcg@10']:.4f}" in row
  row = next(line for line in summary if line.strip().startswith("LM (beam 20)"))
  assert f"{m['test/recall@10']:.4f}  {m['test/ndcg@10']:.4f}" in row
  assert not any(line.startswith("steering") for line in summary)  # nothing to steer by
  assert any(line.startswith("example 1") for line in summary)
  assert not any(line.startswith("example 2") for line in summary)  # no platform to ask for

  # Every title is 150+ of the LM's own tokens; each was trained and scored cut to fit seq_len.
  with open(raw / "items.jsonl", encoding="utf-8") as f:
    titles = [json.loads(line)["title"] for line in f]
  tokenizer = tokenizer_lib.Tokenizer(str(root / "lm" / "tokenizer.model"))
  assert min(len(tokenizer.encode(t)) for t in titles) >= 150
  samples = [json.loads(s) for s in storage.read_text(root / "eval" / "samples.jsonl").splitlines()]
  taught = [(s["item"], s["title"]) for s in samples if s["kind"] == "sid_to_text"]
  assert taught and all(t.endswith(phrasing.MARKER) for _, t in taught)
  sids = tasks.load_sids(str(root / "ids" / "semantic_ids.tsv"))
  for item, title in taught:  # as long as fits: the title as trained on
    assert any(t.startswith(title[:-1]) for t in titles)
    example = {"prompt": phrasing.SID_TO_TEXT["title"][0].format(sid=sids[item]), "answer": title}
    assert len(input_pipeline.tokenize(example, tokenizer, 128)["tokens"]) > 100

  # The same command again finds every stage's fingerprint on the bucket and skips it.
  again = _run("semrec_jax.main", bucket_env, tmp_path, *flags)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("up to date") == 8, again.stdout

  # The chat restores the LM from the bucket too.
  chat = _run("semrec_jax.chat", bucket_env, tmp_path, f"--workdir={workdir}", "--json",
              f"--prompt=I loved {short_titles[0]}; what next?")
  assert chat.returncode == 0, chat.stderr[-3000:]
  assert len(json.loads(chat.stdout.splitlines()[-1])["items"]) == 5

  # What cannot be cut (a history item's ID) does not fit seq_len=24: one line, before step 1.
  short = _run("semrec_jax.main", bucket_env, tmp_path, *flags, "--stages=lm", "--overwrite",
               "--config.lm.seq_len=24")
  lines = short.stderr.strip().splitlines()
  assert short.returncode == 1 and len(lines) == 1, short.stderr[-3000:]
  assert re.fullmatch(r"error: lm: a next_item example with one history item needs seq_len=\d+, "
                      r"more than config.lm.seq_len=24 .*pass --config.lm.seq_len=\d+ or more",
                      lines[0])
  assert short.stdout == "lm: running\n"  # no step taken
  assert not (root / ".lm.incomplete").exists()  # nothing to resume is left to refuse
  assert (root / "lm" / "info.json").exists()  # the finished run stays
