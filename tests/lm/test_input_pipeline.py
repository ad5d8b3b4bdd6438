"""LM tasks and the grain pipeline: hygiene, loss masks, packing, exact resume."""

import itertools
import pickle
import re
import time

import grain
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from semrec_jax import parallel
from semrec_jax.data import tfds_builders
from semrec_jax.lm import fitting, phrasing, input_pipeline, tasks
from semrec_jax.lm.loss import next_token_loss
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder


@pytest.fixture(scope="module")
def train_sources(data, tokenizer):
  later = tasks.later_items(data["split"]["validation"], data["split"]["test"])
  return tasks.sources(data["split"]["train"], data["items"], data["sids"], 20, seed=0,
                       later=later, budget=fitting.Budget(tokenizer, 96))


SID = re.compile(r"<\|sid_start\|>.*?<\|sid_end\|>")
USER_TASKS = ("next_item", "steering", "co_purchase", "explanation", "multi_turn")


@pytest.mark.parametrize("task", USER_TASKS)
def test_user_tasks_only_show_the_users_training_part(data, train_sources, task):
  """Every item in a training example (prompt or answer) is from that user's training part, so
  validation and test items never leak into training."""
  train, valid, test = (data["split"][s] for s in tfds_builders.SPLITS)
  examples = train_sources[task]
  assert len(examples) > 5_000
  sids = data["sids"]
  for k in range(0, len(examples), max(1, len(examples) // 400)):
    example = examples[k]
    if example is None:  # an explanation whose reason item did not fit
      continue
    u = example["user"]
    part = {sids[int(i)] for i in train[u]["history"]} | {sids[int(train[u]["target"])]}
    shown = set(SID.findall(example["prompt"])) | set(SID.findall(example["answer"]))
    # Steering may answer a request drawn from the catalog with an item outside the part.
    inside = set(SID.findall(example["prompt"])) if task == "steering" else shown
    assert inside and inside <= part, (task, u)
    assert not {sids[int(valid[u]["target"])], sids[int(test[u]["target"])]} & shown


def test_next_item_has_one_example_per_user(data):
  train = data["split"]["train"]
  examples = tasks.next_item(train, data["sids"], 20, seed=0)
  assert len(examples) == 19_080
  for u in range(0, 19_080, 13):
    assert examples[u]["answer"] == data["sids"][int(train[u]["target"])]
    assert examples[u]["prompt"].endswith("<|rec|>")


def test_item_tasks_keep_held_out_items_out_and_use_every_text(data):
  held = tasks.held_out_items(2000, seed=0)
  train_items = tasks.item_tasks(data["items"], data["sids"], 0, held_out=False)
  assert len(held) == 40 and len(train_items["text_to_sid"]) == 1960
  answers = {train_items["text_to_sid"][k]["answer"] for k in range(1960)}
  assert not {data["sids"][i] for i in held} & answers
  sid_to_item = {sid: i for i, sid in enumerate(data["sids"])}
  kinds = set()
  for k in range(0, 1960, 3):
    example = train_items["text_to_sid"][k]
    item = data["items"][sid_to_item[example["answer"]]]
    kind, shown = _filled(phrasing.TEXT_TO_SID, example["prompt"])
    title = item["title"].decode()
    expected = {"title": shown == title, "fragment": _contiguous(shown.split(), title.split()),
                "attributes": shown == phrasing.describe(phrasing.attributes(item)),
                "description": shown.split() == item["description"].decode().split()[
                    :phrasing.DESCRIPTION_WORDS]}
    assert expected[kind], (kind, shown, title)
    kinds.add(kind)
    named = train_items["sid_to_text"][k]
    kind, sid = _filled({k: [t.replace("{sid}", "{text}") for t in v]
                         for k, v in phrasing.SID_TO_TEXT.items()}, named["prompt"])
    item = data["items"][sid_to_item[sid]]
    assert named["answer"] == (item["title"].decode() if kind == "title"
                               else phrasing.describe(phrasing.attributes(item)))
  assert kinds == {"title", "fragment", "attributes"}  # the Games sample has no descriptions


def test_text_to_sid_uses_descriptions_where_there_are_some():
  item = {"title": b"Mario Kart 8 Deluxe - Nintendo Switch", "platform": b"Switch",
          "description": b"Hit the road with the definitive version of Mario Kart 8.",
          "genre": b"Racing", "brand": b"Nintendo", "franchise": b"", "product_type": b"Game"}
  examples = tasks.item_tasks([item] * 60, [f"<|sid_{i}|>" for i in range(60)], 0, False)
  kinds = {_filled(phrasing.TEXT_TO_SID, examples["text_to_sid"][k]["prompt"]) for k in range(59)}
  assert {kind for kind, _ in kinds} == {"title", "fragment", "attributes", "description"}
  assert ("description", item["description"].decode()) in kinds
  assert ("attributes", "a racing game for Switch by Nintendo") in kinds


def _contiguous(part: list, whole: list) -> bool:
  """part is a run of half (rounded up) of whole's words."""
  n = len(part)
  return n == (len(whole) + 1) // 2 and any(whole[i:i + n] == part for i in range(len(whole)))


def _filled(templates: dict, prompt: str) -> tuple[str, str]:
  """(kind, text) of the template that produced `prompt`."""
  for kind, options in templates.items():
    for template in options:
      found = re.fullmatch(re.escape(template).replace(re.escape("{text}"), "(.*)"), prompt,
                           re.S)
      if found:
        return kind, found.group(1)
  raise AssertionError(f"no template produced {prompt!r}")


def test_explanations_name_what_target_and_history_item_share(data):
  train = data["split"]["train"]
  examples = tasks.explanation(train, data["attrs"], data["sids"], 20, seed=0)
  assert 0.4 * 19_080 < len(examples) < 19_080
  sid_to_item = {sid: i for i, sid in enumerate(data["sids"])}
  for k in range(0, len(examples), 37):
    example = examples[k]
    target, like = SID.findall(example["answer"])
    assert target == data["sids"][int(train[example["user"]]["target"])]
    assert like in example["prompt"]
    shared = {key: v for key, v in phrasing.attributes(data["items"][sid_to_item[target]]).items()
              if phrasing.attributes(data["items"][sid_to_item[like]]).get(key) == v}
    assert example["answer"] == f"{target}: like {like}, it is {phrasing.reason(shared)}."
  assert phrasing.reason({"platform": "PS4", "genre": "Action", "brand": "Sony"}) == \
      "for PS4 and an action game"


@pytest.mark.parametrize("held_out", [False, True])
def test_bundle_names_come_from_attributes_all_items_share(data, held_out):
  examples = tasks.bundles(data["attrs"], data["sids"], 0, held_out=held_out)
  held = {data["sids"][i] for i in tasks.held_out_items(2000, seed=0)}
  sid_to_item = {sid: i for i, sid in enumerate(data["sids"])}
  assert len(examples) > (40 if held_out else 500)
  names = set()
  for k in range(0, len(examples), 3 if held_out else 7):
    example = examples[k]
    chosen = SID.findall(example["prompt"])
    assert 2 <= len(chosen) <= 4 and len(set(chosen)) == len(chosen)
    assert len(held & set(chosen)) == (1 if held_out else 0)
    shared = phrasing.attributes(data["items"][sid_to_item[chosen[0]]])
    for sid in chosen[1:]:
      other = phrasing.attributes(data["items"][sid_to_item[sid]])
      shared = {key: v for key, v in shared.items() if other.get(key) == v}
    assert shared and example["answer"] == phrasing.bundle_name(shared)
    names.add(example["answer"])
  assert len(names) > 10
  assert phrasing.bundle_name({"brand": "Nintendo", "platform": "3DS",
                            "product_type": "Accessory"}) == "Nintendo 3DS accessories"


def test_multi_turn_refines_the_first_recommendation(data):
  train = data["split"]["train"]
  examples = tasks.multi_turn(train, data["attrs"], data["sids"], 20, seed=0)
  sid_to_item = {sid: i for i, sid in enumerate(data["sids"])}
  changed = 0
  for k in range(0, len(examples), 29):
    example = examples[k]
    history = [data["sids"][int(i)] for i in train[example["user"]]["history"]]
    first = example["prompt"].split("Assistant: ")[1].split("\n")[0]
    assert first == history[-1] and example["prompt"].count(first) == 1
    assert example["prompt"].endswith("Assistant: <|rec|>")
    asked = [c for c in phrasing.constraints(data["attrs"][sid_to_item[example["answer"]]])
             if c in example["prompt"].split("Assistant: ")[1]]
    assert asked, example
    changed += asked[0] not in phrasing.constraints(data["attrs"][sid_to_item[first]])
  assert changed > 0.5 * len(range(0, len(examples), 29))


def test_tokenize_masks_the_answer_and_cuts_nothing(tokenizer):
  example = {"task": "next_item", "prompt": "Items so far: Halo 3. Next: <|rec|>",
             "answer": "<|sid_start|><|sid_1|><|sid_300|><|sid_600|><|sid_768|><|sid_end|>"}
  row = input_pipeline.tokenize(example, tokenizer, 64)
  answer_len = 6 + 1  # six single-piece tokens and eos
  prompt_len = len(tokenizer.prompt_ids(example["prompt"]))
  assert len(row["tokens"]) == 1 + prompt_len + answer_len
  assert row["tokens"][0] == tokenizer.bos_id and row["tokens"][-1] == tokenizer.eos_id
  assert row["mask"].tolist() == [0] * (len(row["tokens"]) - answer_len) + [1] * answer_len
  exact = input_pipeline.tokenize(example, tokenizer, len(row["tokens"]))
  np.testing.assert_array_equal(exact["tokens"], row["tokens"])
  with pytest.raises(ValueError, match=f"next_item example needs 1 \\+ {prompt_len} prompt \\+ "
                     f"7 answer tokens, more than seq_len={len(row['tokens']) - 1}; prompts lose "
                     "only whole history items"):
    input_pipeline.tokenize(example, tokenizer, len(row["tokens"]) - 1)


def test_history_loss_masks_the_codes_of_every_history_item(tokenizer):
  one, two, target = ("<|sid_start|><|sid_1|><|sid_257|><|sid_513|><|sid_769|><|sid_end|>",
                      "<|sid_start|><|sid_2|><|sid_258|><|sid_514|><|sid_770|><|sid_end|>",
                      "<|sid_start|><|sid_3|><|sid_259|><|sid_515|><|sid_771|><|sid_end|>")
  example = {"prompt": f"Items so far: {one}, {two}. Next: <|rec|>", "answer": target}
  plain = input_pipeline.tokenize(example, tokenizer, 64)
  row = input_pipeline.tokenize({**example, "history_loss": True}, tokenizer, 64)
  np.testing.assert_array_equal(row["tokens"], plain["tokens"])
  masked = [tokenizer.decode([t]) for t, m in zip(row["tokens"], row["mask"] - plain["mask"]) if m]
  assert masked == ["<|sid_1|>", "<|sid_257|>", "<|sid_513|>", "<|sid_769|>", "<|sid_end|>",
                    "<|sid_2|>", "<|sid_258|>", "<|sid_514|>", "<|sid_770|>", "<|sid_end|>"]
  assert plain["mask"].sum() == 7  # the answer's 6 tokens and eos


def test_packed_and_padded_batches_give_the_same_loss(train_sources, tokenizer):
  stream = input_pipeline.mixture(train_sources, {t: 1 for t in tasks.TASKS}, 0, tokenizer, 96)
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

  source = grain.MapDataset.source(examples).to_iter_dataset()
  packed = list(input_pipeline.packed_batches(source, 256, 4, drop_remainder=False))
  padded = list(input_pipeline.padded_batches(source, 96, 24, drop_remainder=False))
  assert sum(int((b["segment_ids"] > 0).sum()) for b in packed) == sum(
      len(e["tokens"]) for e in examples)  # every token of every example, once
  assert max(int(b["segment_ids"].max()) for b in packed) > 1  # rows really hold several
  (packed_loss, packed_n), (padded_loss, padded_n) = total(packed), total(padded)
  assert packed_n == padded_n == sum(int(e["mask"].sum()) for e in examples)
  np.testing.assert_allclose(packed_loss, padded_loss, rtol=1e-4)


def test_pipeline_is_deterministic_and_resumes_exactly(train_sources, tokenizer):
  def fresh():
    stream = input_pipeline.mixture(train_sources, {"next_item": 3, "text_to_sid": 1,
                                               "sid_to_text": 1}, 0, tokenizer, 128)
    return iter(input_pipeline.packed_batches(stream, 256, 4))

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


def test_worker_processes_and_device_prefetch_stay_deterministic_and_resumable(
    train_sources, tokenizer):
  """2 grain worker processes, micro-batches stacked for accumulation, and a thread putting
  batches on the devices ahead: a second run yields the same batches, and a run restored from a
  state taken mid-way (with batches still in the prefetch buffers) continues exactly."""
  mesh = parallel.make_mesh()

  def put(batch):
    return {k: parallel.global_batch(v, mesh, batch_axis=1) for k, v in batch.items()}

  def fresh():
    stream = input_pipeline.mixture(train_sources, {"next_item": 3, "text_to_sid": 1}, 0, tokenizer,
                              128)
    return iter(input_pipeline.training_batches(stream, 128, 8, accumulate=2, workers=2, put=put))

  it = fresh()
  try:
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    rest = [next(it) for _ in range(2)]
  finally:
    it.close()
  assert first[0]["tokens"].shape == (2, 8, 128)
  assert first[0]["tokens"].sharding.spec == P(None, ("data", "fsdp"), None)
  for before, after in ((None, first), (state, rest)):
    again = fresh()
    try:
      if before is not None:
        again.set_state(before)
      for a, b in zip(after, [next(again) for _ in range(2)]):
        for key in a:
          np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    finally:
      again.close()
  assert not np.array_equal(np.asarray(first[0]["tokens"]), np.asarray(rest[0]["tokens"]))


def test_steering_answers_meet_the_request_and_free_ones_are_the_nearest(data):
  train = data["split"]["train"]
  later = tasks.later_items(data["split"]["validation"], data["split"]["test"])
  examples = tasks.steering(train, data["attrs"], data["sids"], 20, seed=0, later=later)
  assert len(examples) == 19_080  # the sample has requestable values: every user is usable
  sid_to_item = {sid: i for i, sid in enumerate(data["sids"])}
  codes = [tuple(s.split("><")[1:-1]) for s in data["sids"]]
  shared = lambda a, b: next((n for n in range(len(a)) if a[n] != b[n]), len(a))
  phrasings, free = set(), 0
  for k in range(0, len(examples), 11):
    example = examples[k]
    answer = sid_to_item[example["answer"]]
    stated = [c for c in phrasing.constraints(data["attrs"][answer]) if c in example["prompt"]]
    assert stated, example
    phrasings.add(" ".join(stated[0].split()[:2]))
    target = int(train[example["user"]]["target"])
    if answer != target:  # a request drawn from the catalog: the nearest item that meets it
      free += 1
      holders = [i for i, a in enumerate(data["attrs"])
                 if any(c in stated for c in phrasing.constraints(a)) and i not in later[example["user"]]]
      assert shared(codes[answer], codes[target]) == max(shared(codes[i], codes[target])
                                                         for i in holders)
  assert len(phrasings) >= 3  # platform, brand, genre or type requests all occur
  share = free / len(range(0, len(examples), 11))  # targets without attributes are always free
  assert tasks.FREE_REQUEST_SHARE - 0.1 < share < tasks.FREE_REQUEST_SHARE + 0.15
  assert phrasing.constraints(phrasing.attributes({
      "platform": b"PS4", "brand": b"Sony", "genre": b"Action|Racing", "franchise": b"",
      "product_type": b"Accessory"})) == [
      "something for PS4", "an action game", "something by Sony", "an accessory, not a game"]


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


def test_price_requests_are_taught_where_the_catalog_has_prices():
  prices = [3.0 * i for i in range(40)]  # $0 .. $117
  items = [{"price": f"{p:.2f}" if i % 7 else ""} for i, p in enumerate(prices)]
  bands = [phrasing.price_bands(item) for item in items]
  assert bands[5] == ["20", "30", "50", "100"] and bands[7] == [] and bands[39] == []
  sids = [f"<|sid_start|><|sid_{i % 4}|><|sid_{256 + i}|><|sid_end|>" for i in range(40)]
  sequences = [{"history": np.asarray([i, i + 1], np.int32), "target": i + 2}
               for i in range(0, 36)]
  examples = tasks.steering(sequences, [{} for _ in items], sids, 20, seed=0, bands=bands)
  assert len(examples) == len(sequences)  # every target is usable: price bands are requestable
  item_of = {s: i for i, s in enumerate(sids)}
  asked = set()
  for example in examples:
    limit = float(re.search(r"something under \$(\d+)", example["prompt"]).group(1))
    answer = item_of[example["answer"]]
    assert items[answer]["price"] and float(items[answer]["price"]) <= limit, example
    asked.add(limit)
  assert asked >= {20.0, 50.0, 100.0}


SEQ_LEN = 112  # room for 5 to 10 items of 7 tokens besides the instruction and answer
ITEM_LIST = re.compile(f"{SID.pattern}(?:, {SID.pattern})*")


def _long_histories(users=12, length=40):
  """Users with `length` items of history each, in a catalog of PS4 racing games."""
  sids = [f"<|sid_start|><|sid_{i}|><|sid_{256 + i}|><|sid_{512 + i % 7}|><|sid_{768 + i % 3}|>"
          "<|sid_end|>" for i in range(users + length)]
  attrs = [{"platform": "PS4", "genre": "Racing", "product_type": "Game"} for _ in sids]
  sequences = [{"history": np.arange(u, u + length, dtype=np.int32), "target": u + length}
               for u in range(users)]
  return sequences, attrs, sids


HISTORY_TASKS = {
    "next_item": lambda seq, attrs, sids, budget: tasks.next_item(seq, sids, 40, 0,
                                                                  budget=budget),
    "steering": lambda seq, attrs, sids, budget: tasks.steering(seq, attrs, sids, 40, 0,
                                                                budget=budget),
    "explanation": lambda seq, attrs, sids, budget: tasks.explanation(seq, attrs, sids, 40, 0,
                                                                      budget),
    "multi_turn": lambda seq, attrs, sids, budget: tasks.multi_turn(seq, attrs, sids, 40, 0,
                                                                    budget),
}


def _whole_ids(tokenizer, tokens: list[int]) -> int:
  """How many semantic IDs `tokens` hold, checking each is whole: start, 4 codes, end."""
  start, end = tokenizer.sid_start_id, tokenizer.sid_end_id
  first_code = tokenizer.piece_id("<|sid_0|>")
  starts = [i for i, t in enumerate(tokens) if t == start]
  assert tokens.count(end) == len(starts)
  for i in starts:
    assert tokens[i + 5] == end, tokens[i:i + 6]
    assert all(first_code <= t < first_code + 1024 for t in tokens[i + 1:i + 5])
  return len(starts)


@pytest.mark.parametrize("task", HISTORY_TASKS)
def test_long_histories_lose_their_oldest_items_whole(tokenizer, task):
  """Against the same examples built without a budget: the instruction stays verbatim, the newest
  items stay (as many as fit, each a whole 6-token ID) and the example fits seq_len."""
  sequences, attrs, sids = _long_histories()
  build = lambda budget: HISTORY_TASKS[task](sequences, attrs, sids, budget)
  whole, cut = build(None), build(fitting.Budget(tokenizer, SEQ_LEN))
  assert len(whole) == len(cut) == len(sequences)
  answer_len = lambda ex: len(tokenizer.encode(ex["answer"])) + 1
  shortened = 0
  for full, fit in zip(whole, cut):
    assert fit["answer"] == full["answer"]
    shown, kept = SID.findall(full["prompt"]), SID.findall(fit["prompt"])
    assert kept and kept == shown[len(shown) - len(kept):]  # the newest items
    assert ITEM_LIST.sub("<items>", fit["prompt"]) == ITEM_LIST.sub("<items>", full["prompt"])
    tokens = input_pipeline.tokenize(fit, tokenizer, SEQ_LEN)["tokens"].tolist()
    assert len(tokens) <= SEQ_LEN
    assert _whole_ids(tokenizer, tokens) == len(kept) + len(SID.findall(fit["answer"]))
    if len(kept) < len(shown):  # one item more would not have fitted
      shortened += 1
      older = shown[len(shown) - len(kept) - 1]
      more = fit["prompt"].replace(kept[0], f"{older}, {kept[0]}", 1)
      assert 1 + len(tokenizer.prompt_ids(more)) + answer_len(fit) > SEQ_LEN
      with pytest.raises(ValueError, match=f"{task} example .* more than seq_len={SEQ_LEN}"):
        input_pipeline.tokenize(full, tokenizer, SEQ_LEN)  # the whole history would not fit
  assert shortened >= len(sequences) // 2


def test_explanations_whose_reason_item_does_not_fit_are_left_out(tokenizer):
  sequences, _, sids = _long_histories(users=1)
  attrs = [{"brand": "Other"} for _ in sids]
  attrs[0] = attrs[40] = {"brand": "Sony"}  # only the oldest history item shares the target's
  whole = tasks.explanation(sequences, attrs, sids, 40, 0)
  cut = tasks.explanation(sequences, attrs, sids, 40, 0, fitting.Budget(tokenizer, SEQ_LEN))
  assert SID.findall(whole[0]["answer"]) == [sids[40], sids[0]]
  assert len(cut) == 1 and cut[0] is None
  assert not list(cut.to_iter_dataset())  # grain skips it


def test_an_example_that_cannot_fit_names_its_task(tokenizer):
  """Only history items are dropped: a prompt whose fixed part does not fit is an error."""
  sequences, attrs, sids = _long_histories(users=1)
  example = tasks.multi_turn(sequences, attrs, sids, 40, 0, fitting.Budget(tokenizer, 24))[0]
  assert len(SID.findall(example["prompt"])) == 2  # one history item and the first answer
  with pytest.raises(ValueError, match=r"multi_turn example \(user 0\) needs 1 \+ \d+ prompt \+ "
                     r"7 answer tokens, more than seq_len=24.*raise config.lm.seq_len"):
    input_pipeline.tokenize(example, tokenizer, 24)


def test_examples_are_built_and_tokenized_once_per_process(tokenizer):
  """Three epochs of a 12-example task: 12 tokenizations, and the same 12 examples each epoch."""
  calls = []

  def build(index, _):
    calls.append(index)
    return {"task": "t", "prompt": f"item {index}", "answer": f"answer {index}"}

  source = grain.MapDataset.source(list(range(12))).map_with_index(build)
  stream = iter(input_pipeline.mixture({"t": source}, {"t": 1.0}, 0, tokenizer, 64))
  epochs = [sorted(tuple(next(stream)["tokens"]) for _ in range(12)) for _ in range(3)]
  assert epochs[0] == epochs[1] == epochs[2] and len(set(epochs[0])) == 12
  assert sorted(calls) == list(range(12))


def test_memo_builds_each_index_once_under_read_ahead_threads():
  """grain's read-ahead threads ask for the same index twice at an epoch boundary; with slow builds
  an unlocked memo built some index twice in 16 of 20 runs of this loop."""
  for trial in range(10):
    calls = []

    def build(index, _):
      calls.append(index)
      time.sleep(0.002)
      return index

    memo = input_pipeline.Memo(grain.MapDataset.source(list(range(12))).map_with_index(build))
    stream = iter(memo.shuffle(seed=trial).repeat().to_iter_dataset())
    assert sorted(next(stream) for _ in range(36)) == sorted(list(range(12)) * 3)
    assert sorted(calls) == list(range(12)), f"trial {trial}"
  memo = input_pipeline.Memo(grain.MapDataset.source(list(range(12))))
  assert memo[5] == 5
  copy = pickle.loads(pickle.dumps(memo))  # as grain sends it to worker processes
  assert [copy[i] for i in range(12)] == list(range(12)) and not memo._locks
