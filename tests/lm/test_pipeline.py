"""LM tasks and the grain pipeline: hygiene, loss masks, packing, exact resume."""

import itertools
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semrec_jax.data import tfds_builders
from semrec_jax.lm import pipeline, tasks
from semrec_jax.lm.loss import next_token_loss
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder


def _sources(data):
  return tasks.sources(data["split"]["train"], data["items"], data["sids"], 20, seed=0)


def test_next_item_training_examples_never_show_held_out_items(data):
  train, valid, test = (data["split"][s] for s in tfds_builders.SPLITS)
  examples = tasks.next_item(train, data["sids"], 20, seed=0)
  assert len(examples) == 19_080
  for u in range(0, 19_080, 13):
    example = examples[u]
    assert example["answer"] == data["sids"][int(train[u]["target"])]
    for held in (int(valid[u]["target"]), int(test[u]["target"])):
      assert data["sids"][held] not in example["prompt"]
    assert example["prompt"].endswith("<|rec|>")
  held = tasks.held_out_items(2000, seed=0)
  train_items = tasks.item_tasks(data["items"], data["sids"], 0, held_out=False)["title_to_sid"]
  assert len(held) == 40 and len(train_items) == 1960
  assert not {data["sids"][i] for i in held} & {train_items[k]["answer"] for k in range(1960)}


def test_tokenize_masks_the_answer_and_keeps_it_when_truncating(tokenizer):
  example = {"prompt": "Items so far: Halo 3. Next: <|rec|>",
             "answer": "<|sid_start|><|sid_1|><|sid_300|><|sid_600|><|sid_768|><|sid_end|>"}
  row = pipeline.tokenize(example, tokenizer, 64)
  answer_len = 6 + 1  # six single-piece tokens and eos
  assert row["tokens"][0] == tokenizer.bos_id and row["tokens"][-1] == tokenizer.eos_id
  assert row["mask"].tolist() == [0] * (len(row["tokens"]) - answer_len) + [1] * answer_len
  short = pipeline.tokenize(example, tokenizer, 10)
  assert len(short["tokens"]) == 10 and short["mask"].sum() == answer_len
  np.testing.assert_array_equal(short["tokens"][-answer_len:], row["tokens"][-answer_len:])
  with pytest.raises(ValueError, match="does not fit"):
    pipeline.tokenize(example, tokenizer, 5)


def test_packed_and_padded_batches_give_the_same_loss(data, tokenizer):
  stream = pipeline.mixture(_sources(data), {"next_item": 2, "steering": 1, "co_purchase": 1,
                                             "title_to_sid": 1, "sid_to_title": 1}, 0,
                            tokenizer, 96)
  examples = list(itertools.islice(iter(stream), 24))
  config = configs.get("tiny", vocab_size=tokenizer.vocab_size, num_layers=2)
  model = Decoder(config, nnx.Rngs(0))

  def total(batches):
    loss, count = 0.0, 0
    for b in batches:
      s, n = next_token_loss(model(jnp.asarray(b["tokens"]), jnp.asarray(b["positions"]),
                                   jnp.asarray(b["segment_ids"])),
                             b["tokens"], b["mask"], b["segment_ids"])
      loss, count = loss + float(s), count + int(n)
    return loss, count

  import grain  # pylint: disable=import-outside-toplevel
  source = grain.MapDataset.source(examples).to_iter_dataset()
  packed = list(pipeline.packed_batches(source, 256, 4, drop_remainder=False))
  padded = list(pipeline.padded_batches(source, 96, 24, drop_remainder=False))
  assert sum(int((b["segment_ids"] > 0).sum()) for b in packed) == sum(
      len(e["tokens"]) for e in examples)  # every token of every example, once
  assert max(int(b["segment_ids"].max()) for b in packed) > 1  # rows really hold several
  (packed_loss, packed_n), (padded_loss, padded_n) = total(packed), total(padded)
  assert packed_n == padded_n == sum(int(e["mask"].sum()) for e in examples)
  np.testing.assert_allclose(packed_loss, padded_loss, rtol=1e-4)


def test_pipeline_is_deterministic_and_resumes_exactly(data, tokenizer):
  def fresh():
    stream = pipeline.mixture(_sources(data), {"next_item": 3, "title_to_sid": 1,
                                               "sid_to_title": 1}, 0, tokenizer, 128)
    return iter(pipeline.packed_batches(stream, 256, 4))

  it = fresh()
  first = [next(it) for _ in range(2)]
  state = it.get_state()
  rest = [next(it) for _ in range(3)]
  again = fresh()
  for a, b in zip(first, [next(again) for _ in range(2)]):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
  resumed = fresh()
  resumed.set_state(state)
  for a, b in zip(rest, [next(resumed) for _ in range(3)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  efficiency = np.mean([(b["segment_ids"] > 0).mean() for b in rest])
  assert efficiency >= 0.9  # share of non-padding tokens


def test_steering_constraints_hold_for_the_target(data):
  train = data["split"]["train"]
  examples = tasks.steering(train, data["items"], data["sids"], 20, seed=0)
  assert 0.5 * 19_080 < len(examples) <= 19_080  # users whose target has an attribute
  sid_to_item = {sid: i for i, sid in enumerate(data["sids"])}
  phrasings = set()
  for k in range(0, len(examples), 11):
    example = examples[k]
    target = data["items"][sid_to_item[example["answer"]]]
    stated = [c for c in tasks.constraints(target) if c in example["prompt"]]
    assert stated, example
    phrasings.add(stated[0].split()[0] + " " + stated[0].split()[1])
  assert len(phrasings) >= 3  # platform, brand, genre or type constraints all occur
  assert tasks.constraints({"platform": b"PS4", "brand": b"Sony", "genre": b"Racing|Action",
                            "product_type": b"Accessory"}) == [
      "something for PS4", "a racing game", "something by Sony", "an accessory, not a game"]


def test_co_purchase_pairs_stay_inside_the_training_part(data):
  train, valid, test = (data["split"][s] for s in tfds_builders.SPLITS)
  examples = tasks.co_purchase(train, data["sids"], seed=0)
  lengths = np.array([len(train[u]["history"]) for u in range(len(train))])
  assert len(examples) == lengths.sum()  # one per position that has a later item
  starts = np.concatenate([[0], np.cumsum(lengths)])
  for k in range(0, len(examples), 97):
    u = int(np.searchsorted(starts, k, side="right") - 1)
    i = k - starts[u]
    seq = [int(x) for x in train[u]["history"]] + [int(train[u]["target"])]
    example = examples[k]
    assert example["prompt"].count(data["sids"][seq[i]]) == 1
    later = [data["sids"][x] for x in seq[i + 1:i + 1 + tasks.CO_PURCHASE_WINDOW]]
    assert example["answer"] in later
    assert example["answer"] not in (data["sids"][int(valid[u]["target"])],
                                     data["sids"][int(test[u]["target"])])
