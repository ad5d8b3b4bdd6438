"""Every LM example fits seq_len: long titles are cut to fit with a marker (short ones never
change), and an example nothing can cut enough stops the lm stage before training, in one line
naming it and the seq_len it needs. A catalog of very long titles through the default pipeline:
tests/test_remote_workdir.py."""

import random
import re

import numpy as np
import pytest

from semrec_jax.lm import fitting, phrasing, input_pipeline, stage, tasks
from semrec_jax.lm import tokenizer as tokenizer_lib
from semrec_jax.stages import StageError

SEQ_LEN = 128
WORDS = ("Wireless Controller Charging Dock Station Stand Nintendo Switch PlayStation Xbox Edition "
         "Carrying Case Screen Protector Tempered Glass Thumb Grip Caps Cable Adjustable LED "
         "Indicator Anti-Slip Base Black Red Blue Compatible Models Bundle Pack Premium").split()


def _long_title(i: int, words: int = 60) -> str:
  """A real-looking product title of about 150 tokens: features and several 12-digit codes
  (digits are one token each)."""
  rng = random.Random(i)
  codes = ", ".join(f"{k} {rng.randrange(10**11, 10**12)}" for k in ("UPC", "EAN", "SKU", "MPN",
                                                                      "Ref", "Lot", "Batch"))
  return f"{' '.join(rng.choice(WORDS) for _ in range(words))} ({codes})"


@pytest.fixture(scope="module")
def tokenizer():
  texts = [_long_title(i) for i in range(200)] + [" ".join(WORDS)] * 20
  reserved = tokenizer_lib.semantic_id_tokens(levels=4, codebook_size=8)
  return tokenizer_lib.Tokenizer(tokenizer_lib.train(texts, 400, reserved))


def _sids(n: int) -> list[str]:
  return [f"<|sid_start|><|sid_{i % 8}|><|sid_{8 + i // 8 % 8}|><|sid_{16 + i // 64 % 8}|>"
          f"<|sid_{24 + i % 3}|><|sid_end|>" for i in range(n)]


def _item(i: int, title: str, **attributes) -> dict:
  fields = ("platform", "genre", "brand", "franchise", "product_type", "description", "price")
  return {"item_id": f"B{i:04d}".encode(), "title": title.encode(),
          **{k: attributes.get(k, "").encode() for k in fields}}


def test_long_titles_are_cut_to_fit_with_a_marker_and_short_ones_stay(tokenizer):
  budget, sid = fitting.Budget(tokenizer, SEQ_LEN), _sids(1)[0]
  short = "Mario Kart 8 Deluxe - Nintendo Switch"
  assert fitting.taught_title(_item(0, short), sid, budget) == short
  assert fitting.taught_title(_item(0, short), sid, None) == short
  for i in range(20):
    title = _long_title(i)
    assert len(tokenizer.encode(title)) >= 150
    cut = fitting.taught_title(_item(i, title), sid, budget)
    assert cut.endswith(phrasing.MARKER) and title.startswith(cut[:-1])  # whole words, then "…"
    words = len(cut[:-1].split())
    assert cut[:-1] == " ".join(title.split()[:words])
    writes = lambda t: ([{"prompt": x.format(text=t), "answer": sid}
                         for x in phrasing.TEXT_TO_SID["title"]] +
                        [{"prompt": x.format(sid=sid), "answer": t}
                         for x in phrasing.SID_TO_TEXT["title"]])
    for example in writes(cut):  # every example writing it fits ...
      assert len(input_pipeline.tokenize(example, tokenizer, SEQ_LEN)["tokens"]) <= SEQ_LEN
    longer = " ".join(title.split()[:words + 1]) + phrasing.MARKER  # ... and one word more would not
    assert any(1 + sum(map(len, input_pipeline._ids(e, tokenizer))) > SEQ_LEN for e in writes(longer))
  # A title without spaces loses tokens, never half a character.
  glued = "ゼルダの伝説" * 40
  cut = fitting.taught_title(_item(0, glued), sid, budget)
  assert cut.endswith(phrasing.MARKER) and glued.startswith(cut[:-1]) and "\ufffd" not in cut


def test_item_tasks_write_the_cut_title_everywhere(tokenizer):
  """sid_to_text answers, text_to_sid prompts and their title fragments all use the title as cut,
  so every example fits; without a budget the titles stay whole (as before)."""
  items = [_item(i, _long_title(i)) for i in range(60)]
  sids, budget = _sids(60), fitting.Budget(tokenizer, SEQ_LEN)
  built = tasks.item_tasks(items, sids, 0, held_out=False, budget=budget)
  whole = tasks.item_tasks(items, sids, 0, held_out=False)
  kinds = set()
  for k in range(len(built["sid_to_text"])):
    i = built["sid_to_text"][k]["item"]
    title = fitting.taught_title(items[i], sids[i], budget)
    assert built["sid_to_text"][k]["answer"] == title != whole["sid_to_text"][k]["answer"]
    prompt = built["text_to_sid"][k]["prompt"]
    if title in prompt:
      kinds.add("title")
    else:  # a run of half the cut title's words, without the marker
      kinds.add("fragment")
      shown = re.search(r'"(.*)"|contains: (.*)\n', prompt)
      fragment = (shown.group(1) or shown.group(2)).split()
      words = title[:-1].split()
      assert any(words[j:j + len(fragment)] == fragment for j in range(len(words)))
    for task in ("sid_to_text", "text_to_sid"):
      assert len(input_pipeline.tokenize(built[task][k], tokenizer, SEQ_LEN)["tokens"]) <= SEQ_LEN
  assert kinds == {"title", "fragment"}
  assert stage.check_lengths([built], tokenizer, items, SEQ_LEN) is None


def test_an_example_that_cannot_be_cut_stops_the_stage_in_one_line(tokenizer):
  """Attribute values are not cut (they are matched by name): an item whose brand alone is longer
  than seq_len is refused before training, naming the example, its item and the seq_len it needs,
  which is exactly enough."""
  long = next(i for i in (29, 28) if i not in tasks.held_out_items(30, 0))  # a training item
  items = [_item(i, f"Game {i}", platform="PS4", genre="Racing", product_type="Game",
                 brand=_long_title(99) if i == long else "Sony") for i in range(30)]
  sids = _sids(30)  # users of items 0..26 only: no request or reason holds the long brand
  sequences = [{"history": np.asarray([u, u + 1], np.int32), "target": u + 2} for u in range(25)]

  def sources(seq_len):
    return [tasks.sources(sequences, items, sids, 5, 0, budget=fitting.Budget(tokenizer, seq_len))]

  with pytest.raises(StageError) as refused:
    stage.check_lengths(sources(SEQ_LEN), tokenizer, items, SEQ_LEN)
  message = str(refused.value)
  found = re.fullmatch(rf"lm: the (sid_to_text|text_to_sid) example of item {long} \(B00{long}\) "
                       r"needs seq_len=(\d+), more than config.lm.seq_len=128 \(prompt .*, "
                       r"answer .*\); only histories, titles and descriptions are cut to fit "
                       r"\(semrec_jax/lm/fitting.py\): pass --config.lm.seq_len=(\d+) or more",
                       message)
  assert found and "\n" not in message, message
  need = int(found.group(2))
  assert found.group(3) == str(need) and need > SEQ_LEN
  stage.check_lengths(sources(need), tokenizer, items, need)  # exactly enough
  with pytest.raises(StageError, match=f"needs seq_len={need}, more than "
                     f"config.lm.seq_len={need - 1}"):
    stage.check_lengths(sources(need - 1), tokenizer, items, need - 1)


def test_history_tasks_are_checked_by_their_shortest_forms(tokenizer):
  """A request too long even with one history item names its task without building every
  example."""
  items = [_item(i, f"Game {i}", platform="PS4", product_type="Game",
                 brand=_long_title(99) if i % 2 else "Sony") for i in range(30)]
  sids = _sids(30)
  sequences = [{"history": np.asarray([u, u + 1], np.int32), "target": u + 2} for u in range(25)]
  attrs = phrasing.item_attributes(items)
  steering = tasks.steering(sequences, attrs, sids, 5, 0, budget=fitting.Budget(tokenizer, 48))
  assert {e["request"] for e in steering.shortest} >= {"something by Sony",
                                                       "something by " + _long_title(99)}
  need, example = input_pipeline.longest({"steering": steering}, tokenizer)
  assert example["request"] == "something by " + _long_title(99) and need > 48
  worst = max(len(input_pipeline.tokenize(steering[k], tokenizer, 10_000)["tokens"])
              for k in range(len(steering)))
  assert worst == need  # every steering example is cut to one item here: the bound is reached
  with pytest.raises(StageError, match=r"^lm: a steering example with one history item and the "
                     rf"request 'something by .*\.\.\.' needs seq_len={need}, more than "
                     r"config.lm.seq_len=48"):
    stage.check_lengths([{"steering": steering}], tokenizer, items, 48)
