"""Task builders: grain MapDatasets of {"task", "prompt", "answer"} examples (plus "user", the
row of the sequences split, for the tasks built from a user's history) made from the prepared data
and the semantic IDs. Items are written as semantic-ID token strings.

Length (Budget): every example fits config.lm.seq_len, by these rules:
  - a history too long loses its oldest items, whole, never the instruction or part of a semantic
    ID;
  - an item's title (and a description's start) too long for any example that writes it (a
    text_to_sid prompt, a sid_to_text answer) is cut, at a word where it can be, to the most
    tokens every such example leaves (seq_len less its longest fixed part), and ends with MARKER
    ("…"); the cut title is the title everywhere (its fragments are drawn from it, and the
    evaluation asks and scores with it: taught_title). A title that fits is never changed.
  - nothing else is cut: attribute values, requests, reasons and bundle names are short and
    matched by name. Before the first step pipeline.longest measures every example of the item
    and bundle tasks and, for the tasks built from histories (whose examples only lose items), the
    shortest each can be cut to (`shortest`: one history item, every template and request); the
    lm stage refuses in one line an example that still cannot fit.

Hygiene: training examples come only from each user's training part (the `train` split: history and
target both precede the validation and test items); held-out examples for evaluation loss come from
the `validation` split, and for the item tasks (text_to_sid, sid_to_text, bundle) from a fixed 2% of
items left out of training.

Templates (the phrasing is drawn per example from a seeded generator, so runs are reproducible):
  next_item    "<history phrasing with items joined by ', '> <|rec|>" -> target SID
  steering     history + a request in words ("something for PS4", "a racing game", "something by
               Nintendo", "an accessory, not a game", "something under $20" where the catalog
               has prices): one the target meets -> target, or one
               drawn from the catalog -> the item meeting it nearest the target
  co_purchase  an item -> an item the same user bought within the next 3
  text_to_sid  the title, a fragment of it (half its words), the start of the description, or the
               attributes in words -> SID
  sid_to_text  SID -> the title, or the attributes in words ("a racing game for PS4 by Sony")
  explanation  history -> "<target SID>: like <history SID>, it is <attributes they share>"
  bundle       2-4 items sharing attributes -> a name made from them ("Nintendo 3DS accessories")
  multi_turn   "User: <history> ... Assistant: <last history item> User: <constraint the target
               meets> Assistant:" -> target
"""

import math
import zlib

import grain
import numpy as np
from absl import logging

from semrec_jax.data.tfds_builders import text
from semrec_jax.ids import assign

NEXT_ITEM = (
    "A user bought, in order: {items}. What will they buy next? <|rec|>",
    "Purchase history: {items}. Recommend the next item. <|rec|>",
    "Items so far: {items}. Next: <|rec|>",
)
TEXT_TO_SID = {
    "title": ('What is the semantic ID of "{text}"? ', "Item: {text}\nID: "),
    "fragment": ('Which item has "{text}" in its title? ', "Title contains: {text}\nID: "),
    "description": ("Which item is described as: {text}\nID: ",),
    "attributes": ("Find {text}.\nID: ",),
}
SID_TO_TEXT = {
    "title": ("Which item has the semantic ID {sid}? ", "{sid} is the item called: "),
    "attributes": ("Describe {sid} in a few words: ", "What kind of item is {sid}? "),
}
DESCRIPTION_WORDS = 30
EXPLANATION = (
    "A user bought: {items}. Recommend an item and say why. <|rec|>",
    "History: {items}. What should they buy next, and why? <|rec|>",
)
BUNDLE = (
    "Name a bundle of these items: {items}. ",
    "Give a short name to the set {items}: ",
)
MULTI_TURN = (
    "User: I bought {items}. What should I get next?\nAssistant: {first}\n"
    "User: Hmm, I'd rather have {constraint}.\nAssistant: <|rec|>",
    "User: My purchases: {items}. Recommend something.\nAssistant: {first}\n"
    "User: Something else, please: I want {constraint}.\nAssistant: <|rec|>",
)
TASKS = ("next_item", "steering", "co_purchase", "text_to_sid", "sid_to_text", "explanation",
         "bundle", "multi_turn")
STEERING = (
    "A user bought: {items}. Now they want {constraint}. <|rec|>",
    "History: {items}. Recommend {constraint}. <|rec|>",
)
CO_PURCHASE = (
    "People who bought {item} also bought <|rec|>",
    "Bought together with {item}: <|rec|>",
)
CO_PURCHASE_WINDOW = 3
HELD_OUT_ITEM_FRACTION = 0.02


MARKER = "…"  # ends an item text cut to fit seq_len


def _rng(seed: int, task: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(task.encode()), index])


class Budget:
  """Counts an example's tokens as pipeline.tokenize will ([bos] prompt answer [eos]), so the
  history tasks can drop a history's oldest items, and item texts be cut, until it fits seq_len."""

  def __init__(self, tokenizer, seq_len: int):
    self.tokenizer, self.seq_len = tokenizer, seq_len
    self._texts = {}  # (kind, text) -> the text as taught
    self._fixed = {}  # kind -> the longest fixed part of the examples writing such a text

  def _forms(self, kind: str, sid: str) -> list:
    """(prompt, answer) writers of the examples that hold an item's `kind` of text."""
    if kind == "title":
      return ([(lambda t, x=x: x.format(text=t), lambda t: sid) for x in TEXT_TO_SID["title"]] +
              [(lambda t, x=x: x.format(sid=sid), lambda t: t) for x in SID_TO_TEXT["title"]])
    return [(lambda t, x=x: x.format(text=t), lambda t: sid) for x in TEXT_TO_SID[kind]]

  def _length(self, prompt: str, answer: str) -> int:
    return 2 + len(self.tokenizer.prompt_ids(prompt)) + len(self.tokenizer.encode(answer))

  def _fits(self, forms, text: str) -> bool:
    return all(self._length(p(text), a(text)) <= self.seq_len for p, a in forms)

  def item_text(self, kind: str, text: str, sid: str) -> str:
    """`text` (an item's "title" or "description" start) whole where every example writing it
    fits seq_len, else cut: its most words, then MARKER, that fit (its first tokens where not even
    one word does; MARKER alone where nothing does: the length check then names the example).
    Semantic IDs all have the same number of tokens, so any item's `sid` gives the same cut."""
    key = (kind, text)
    if key not in self._texts:
      forms = self._forms(kind, sid)
      if kind not in self._fixed:
        self._fixed[kind] = max(self._length(p(""), a("")) for p, a in forms)
      room = self.seq_len - self._fixed[kind]
      # A text well inside the room fits every form (a margin for tokens merging at the joins).
      if len(self.tokenizer.encode(text)) <= room - 8 or self._fits(forms, text):
        self._texts[key] = text
      else:
        self._texts[key] = self._cut(forms, text)
    return self._texts[key]

  def _cut(self, forms, text: str) -> str:
    words = text.split()
    fits = lambda n: self._fits(forms, " ".join(words[:n]) + MARKER)
    if fits(1):
      return " ".join(words[:_most(fits, 1, len(words) - 1)]) + MARKER
    ids = self.tokenizer.encode(text)  # no whole word fits (a very long word, or no spaces)
    start = lambda n: self.tokenizer.decode(ids[:n]).rstrip("\ufffd")  # no half character
    fits = lambda n: self._fits(forms, start(n) + MARKER)
    return start(_most(fits, 0, len(ids) - 1)) + MARKER if fits(0) else MARKER

  def newest(self, write, items: list[str], answer: str) -> list[str]:
    """The newest of `items` (at least one) whose prompt `write(kept)` fits with `answer`. The
    items to drop are estimated from the tokens one item adds (exact for semantic IDs, which all
    have the same length), then adjusted an item at a time: a few tokenizations per example."""
    room = self.seq_len - len(self.tokenizer.encode(answer)) - 2
    size = lambda drop: len(self.tokenizer.prompt_ids(write(items[drop:])))
    full = size(0)
    if full <= room or len(items) <= 1:
      return items
    last = len(items) - 1
    one = size(last)
    if one > room:
      return items[last:]  # even the newest item alone does not fit: the length check says so
    drop = min(last, max(1, math.ceil((full - room) * last / max(1, full - one))))
    while size(drop) > room:
      drop += 1
    while drop > 1 and size(drop - 1) <= room:
      drop -= 1
    return items[drop:]


def _most(fits, low: int, high: int) -> int:
  """The largest n in [low, high] with fits(n), given fits(low) and that fits only grows false."""
  while low < high:
    mid = (low + high + 1) // 2
    low, high = (mid, high) if fits(mid) else (low, mid - 1)
  return low


def taught_title(item: dict, sid: str, budget: Budget | None) -> str:
  """The item's title as the LM is taught it: cut to fit `budget` (Budget.item_text), whole
  without one. The evaluation asks and scores titles with it too."""
  title = text(item["title"])
  return title if budget is None else budget.item_text("title", title, sid)


def _shortest(dataset: grain.MapDataset, examples: list[dict]) -> grain.MapDataset:
  """`dataset` with `shortest`: the examples its builder may cut to one history item, one per
  template and request or answer its examples can hold. Every semantic ID has the same number
  of tokens, so if these fit seq_len so does every example (pipeline.longest reads these
  instead of building them all)."""
  dataset.shortest = examples
  return dataset


def _fitted(budget: Budget | None, write, items: list[str], answer: str) -> str:
  """The prompt `write(items)` with as many of the newest items as fit `budget` (all without)."""
  return write(items if budget is None else budget.newest(write, items, answer))


def _recent(history, max_history: int, rng: np.random.Generator) -> list[int]:
  """The last 1..max_history items of a history (how many drawn from rng), or [] if it is empty."""
  history = [int(i) for i in history]
  keep = int(rng.integers(1, min(max_history, len(history)) + 1)) if history else 0
  return history[len(history) - keep:]


def _items(template: str, **fields):
  """write(items) for Budget.newest: the template with the items joined by ', '."""
  return lambda items: template.format(items=", ".join(items), **fields)


def next_item(sequences, sids: list[str], max_history: int, seed: int,
              history_loss: bool = False, budget: Budget | None = None) -> grain.MapDataset:
  """One example per sequence: the last 1..max_history history items (as many as fit `budget`)
  -> the target (with history_loss, every history item is a target too: see pipeline.tokenize)."""

  def build(index, example):
    rng = _rng(seed, "next_item", index)
    items = [sids[i] for i in _recent(example["history"], max_history, rng)]
    template = NEXT_ITEM[int(rng.integers(len(NEXT_ITEM)))]
    answer = sids[int(example["target"])]
    return {"task": "next_item", "user": index, "answer": answer, "history_loss": history_loss,
            "prompt": _fitted(budget, _items(template), items, answer)}

  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(sequences).map_with_index(build), [
      {"task": "next_item", "prompt": t.format(items=one), "answer": one} for t in NEXT_ITEM])


def attributes(item: dict) -> dict[str, str]:
  """The item's known attributes (first value of multi-valued ones), in a fixed order."""
  out = {}
  for name in ("platform", "genre", "brand", "franchise", "product_type"):
    value = text(item[name]).split("|")[0].strip()
    if value:
      out[name] = value
  return out


def item_attributes(items) -> list[dict[str, str]]:
  """attributes() of every catalog item, read once for all the task builders."""
  return [attributes(items[i]) for i in range(len(items))]


def read_all(sequences) -> list[dict]:
  """Every record of a split, read once into memory (the builders index users many times)."""
  if hasattr(sequences, "__getitems__"):
    return list(sequences.__getitems__(list(range(len(sequences)))))
  return [sequences[u] for u in range(len(sequences))]


STEER_KINDS = ("platform", "genre", "brand", "product_type", "price")
PRICE_BANDS = (10, 20, 30, 50, 100)  # "something under $20": price at most 20 US dollars


def price_bands(item: dict) -> list[str]:
  """The bands ("20", ...) an item's price is within (none when the catalog has no price)."""
  price = text(item.get("price"))
  return [str(b) for b in PRICE_BANDS if price and float(price) <= b]


def constraint(kind: str, value: str) -> str:
  """A plain-language request for items whose attribute `kind` is `value` ("something for PS4",
  "a racing game", "something by Nintendo", "an accessory, not a game")."""
  if kind == "platform":
    return f"something for {value}"
  if kind == "genre":
    return _a(f"{value.lower()} game")
  if kind == "brand":
    return f"something by {value}"
  if kind == "product_type":
    return {"Accessory": "an accessory, not a game",
            "Game": "a game, not an accessory"}.get(value, f"a {value.lower()}")
  if kind == "price":
    return price_constraint(float(value))
  raise ValueError(f"no constraint phrasing for attribute {kind!r}; known: {STEER_KINDS}")


def price_constraint(max_price: float) -> str:
  """A request for items at most `max_price` dollars: "something under $20"."""
  return f"something under ${max_price:g}"


def constraints(a: dict[str, str]) -> list[str]:
  """Plain-language constraints an item with attributes `a` satisfies."""
  return [constraint(kind, a[kind]) for kind in STEER_KINDS if kind in a]


# product_type -> (one, several)
KIND_NOUNS = {"Game": ("game", "games"), "Accessory": ("accessory", "accessories"),
               "Bundle": ("bundle", "bundles"), "Hardware": ("hardware", "hardware"),
               "DLC": ("add-on", "add-ons")}


def _a(phrase: str) -> str:
  return ("an " if phrase and phrase[0] in "aeiou" else "a ") + phrase


def describe(a: dict[str, str]) -> str:
  """Attributes in words: "a racing game for PS4 by Sony, from the Gran Turismo series"."""
  noun = KIND_NOUNS.get(a.get("product_type"), ("item",))[0]
  words = _a(f"{a['genre'].lower()} {noun}" if "genre" in a else noun)
  if "platform" in a:
    words += f" for {a['platform']}"
  if "brand" in a:
    words += f" by {a['brand']}"
  if "franchise" in a:
    words += f", from the {a['franchise']} series"
  return words


def reason(shared: dict[str, str]) -> str:
  """Why two items go together, from the attributes they share: "for PS4 and by Sony"."""
  parts = {"platform": "for {}", "genre": "{} game", "brand": "by {}",
           "franchise": "part of the {} series", "product_type": "{}"}
  said = [_a(parts[k].format(v.lower())) if k in ("genre", "product_type") else parts[k].format(v)
          for k, v in shared.items()]
  return " and ".join(said[:2])


def bundle_name(shared: dict[str, str]) -> str:
  """A name from the attributes every item of a bundle has: "Nintendo 3DS accessories"."""
  noun = KIND_NOUNS.get(shared.get("product_type"), (None, "picks"))[1]
  words = [shared.get("franchise") or shared.get("brand", ""), shared.get("platform", ""),
           shared.get("genre", "").lower(), noun]
  return " ".join(w for w in words if w)


def _informative(options: list[str], said: list[str]) -> list[str]:
  """The constraints in `options` that `said` (what the last item already satisfies) lacks, or all
  of them: a request the history alone would answer teaches the model to ignore the words."""
  return [c for c in options if c not in said] or options


def common_attributes(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
  """The attributes two items have in common (same first value)."""
  return {k: v for k, v in a.items() if b.get(k) == v}


MIN_ITEMS_PER_VALUE = 10  # a value asked for by name needs 10 items (precision@10 can reach 1)
FREE_REQUEST_SHARE = 0.75  # steering examples whose request is drawn from the catalog


def _codes(sid: str) -> tuple[str, ...]:
  """The code tokens of a SID token string (without its start and end markers)."""
  return tuple(sid.split("><")[1:-1])


class _Nearest:
  """For each requestable (kind, value): the items holding it, indexed by every prefix of their
  semantic IDs, so the nearest item with a value is the one sharing the longest prefix."""

  def __init__(self, attrs: list[dict], sids: list[str], bands: list[list[str]]):
    holders: dict[tuple[str, str], list[int]] = {}
    for i, a in enumerate(attrs):
      for kind in STEER_KINDS:
        if kind in a:
          holders.setdefault((kind, a[kind]), []).append(i)
      for band in bands[i]:  # "under $20" holds every item up to $20
        holders.setdefault(("price", band), []).append(i)
    self.values = {key: items for key, items in sorted(holders.items())
                   if len(items) >= MIN_ITEMS_PER_VALUE}
    self.codes = [_codes(s) for s in sids]
    self.index = {key: {} for key in self.values}
    for key, items in self.values.items():
      for i in items:
        for depth in range(len(self.codes[i])):
          self.index[key].setdefault(self.codes[i][:depth], []).append(i)
    kinds = sorted({kind for kind, _ in self.values})
    self.by_kind = {kind: [key for key in self.values if key[0] == kind] for kind in kinds}

  def draw(self, rng: np.random.Generator, target: int,
           banned: set[int]) -> tuple[str, str, int]:
    """(kind, value, item): a kind, a value weighted by its item count (as the evaluation draws
    requests), and the item with that value nearest the target, never one in `banned` (fewer
    than MIN_ITEMS_PER_VALUE items, so one is always left)."""
    assert len(banned) < MIN_ITEMS_PER_VALUE, banned
    keys = self.by_kind[list(self.by_kind)[int(rng.integers(len(self.by_kind)))]]
    weights = np.asarray([len(self.values[k]) for k in keys], np.float64)
    key = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
    codes = self.codes[target]
    for depth in range(len(codes) - 1, -1, -1):
      found = [i for i in self.index[key].get(codes[:depth], ()) if i not in banned]
      if found:
        return key[0], key[1], found[int(rng.integers(len(found)))]
    raise AssertionError("depth 0 holds every item with the value")


def steering(sequences, attrs: list[dict], sids: list[str], max_history: int, seed: int,
             later: list[set[int]] | None = None, bands: list[list[str]] | None = None,
             budget: Budget | None = None) -> grain.MapDataset:
  """The last 1..max_history items (as many as fit `budget`) + a request in words -> an item that
  meets it. In a quarter of the examples (1 - FREE_REQUEST_SHARE) the request is one the next item
  meets (preferably one the last history item does not) and the answer is the next item; in the
  rest the request is drawn from the catalog as the evaluation draws it, and the answer is the item
  with that value nearest the next item (longest shared semantic-ID prefix): the user's taste,
  moved to what they asked for. That item is never one of the user's `later` items (their held-out
  validation and test items), so no held-out pair is trained on by coincidence. Users whose target
  has no usable attribute, in a catalog with no requestable value, are left out."""
  bands = bands or [[] for _ in attrs]  # price_bands of each item
  item_constraints = [constraints(a) + ([constraint("price", bands[i][0])] if bands[i] else [])
                      for i, a in enumerate(attrs)]
  nearest = _Nearest(attrs, sids, bands)
  usable = [u for u in range(len(sequences))
            if item_constraints[int(sequences[u]["target"])] or nearest.values]

  def build(index, u):
    example = sequences[u]
    rng = _rng(seed, "steering", index)
    history = _recent(example["history"], max_history, rng)
    target = int(example["target"])
    options = item_constraints[target]
    if nearest.values and (not options or rng.random() < FREE_REQUEST_SHARE):
      kind, value, target = nearest.draw(rng, target, later[u] if later else set())
      request = constraint(kind, value)
    else:
      if history:
        options = _informative(options, item_constraints[history[-1]])
      request = options[int(rng.integers(len(options)))]
    template = STEERING[int(rng.integers(len(STEERING)))]
    write = _items(template, constraint=request)
    return {"task": "steering", "user": u, "answer": sids[target],
            "prompt": _fitted(budget, write, [sids[i] for i in history], sids[target])}

  requests = {constraint(kind, value) for kind, value in nearest.values} | {
      c for u in usable for c in item_constraints[int(sequences[u]["target"])]}
  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(usable).map_with_index(build), [
      {"task": "steering", "prompt": t.format(items=one, constraint=r), "answer": one,
       "request": r} for r in sorted(requests) for t in STEERING])


def co_purchase(sequences, sids: list[str], seed: int) -> grain.MapDataset:
  """One example per (user, position): the item -> one of the next CO_PURCHASE_WINDOW items of the
  same user (history + target of the given split, so the train split never shows held-out items)."""
  pairs = []
  for u in range(len(sequences)):
    length = len(sequences[u]["history"]) + 1
    pairs += [(u, i) for i in range(length - 1)]

  def build(index, pair):
    u, i = pair
    example = sequences[u]
    seq = [int(x) for x in example["history"]] + [int(example["target"])]
    rng = _rng(seed, "co_purchase", index)
    j = min(len(seq) - 1, i + int(rng.integers(1, CO_PURCHASE_WINDOW + 1)))
    template = CO_PURCHASE[int(rng.integers(len(CO_PURCHASE)))]
    return {"task": "co_purchase", "user": u, "prompt": template.format(item=sids[seq[i]]),
            "answer": sids[seq[j]]}

  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(pairs).map_with_index(build), [
      {"task": "co_purchase", "prompt": t.format(item=one), "answer": one} for t in CO_PURCHASE])


def held_out_items(num_items: int, seed: int) -> np.ndarray:
  """Item indices whose title/SID examples are kept for evaluation only."""
  rng = np.random.default_rng([seed, 7])
  return np.sort(rng.permutation(num_items)[:max(1, int(HELD_OUT_ITEM_FRACTION * num_items))])


def _item_rows(num_items: int, seed: int, held_out: bool) -> list[int]:
  out_set = set(held_out_items(num_items, seed).tolist())
  return [i for i in range(num_items) if (i in out_set) == held_out]


def _text_variants(item: dict, sid: str, rng: np.random.Generator,
                   budget: Budget | None = None) -> dict[str, str]:
  """Texts that point at the item: title, a title fragment, description start, attributes (the
  title and description cut to fit `budget`, the fragment drawn from the title as taught)."""
  title = taught_title(item, sid, budget)
  out = {"title": title}
  words = title.removesuffix(MARKER).split()
  if len(words) >= 4:
    n = (len(words) + 1) // 2
    start = int(rng.integers(len(words) - n + 1))
    out["fragment"] = " ".join(words[start:start + n])
  description = text(item["description"]).split()
  if description:
    start = " ".join(description[:DESCRIPTION_WORDS])
    out["description"] = start if budget is None else budget.item_text("description", start, sid)
  a = attributes(item)
  if len(a) >= 2:
    out["attributes"] = describe(a)
  return out


def item_tasks(items, sids: list[str], seed: int, held_out: bool,
               budget: Budget | None = None) -> dict[str, grain.MapDataset]:
  """text_to_sid and sid_to_text over the training items (or over the held-out ones); each
  example uses one of the item's available texts, drawn per example (titles and descriptions cut
  to fit `budget`)."""
  rows = grain.MapDataset.source(_item_rows(len(items), seed, held_out))

  def text_to_sid(index, i):
    rng = _rng(seed, "text_to_sid", index)
    variants = _text_variants(items[i], sids[i], rng, budget)
    kind = sorted(variants)[int(rng.integers(len(variants)))]
    templates = TEXT_TO_SID[kind]
    return {"task": "text_to_sid", "answer": sids[i], "item": i,
            "prompt": templates[int(rng.integers(len(templates)))].format(text=variants[kind])}

  def sid_to_text(index, i):
    rng = _rng(seed, "sid_to_text", index)
    a = attributes(items[i])
    kind = "attributes" if len(a) >= 2 and rng.random() < 0.5 else "title"
    templates = SID_TO_TEXT[kind]
    answer = describe(a) if kind == "attributes" else taught_title(items[i], sids[i], budget)
    return {"task": "sid_to_text", "answer": answer, "item": i,
            "prompt": templates[int(rng.integers(len(templates)))].format(sid=sids[i])}

  return {"text_to_sid": rows.map_with_index(text_to_sid),
          "sid_to_text": rows.map_with_index(sid_to_text)}


def because(example, attrs: list[dict], max_history: int) -> tuple[int, dict] | None:
  """(history item, the attributes it shares with the target) of an explanation: the most recent
  of the last `max_history` history items sharing any, or None where none does."""
  target = attrs[int(example["target"])]
  for h in reversed([int(i) for i in example["history"]][-max_history:]):
    shared = common_attributes(target, attrs[h])
    if shared:
      return h, shared
  return None


def explanation(sequences, attrs: list[dict], sids: list[str], max_history: int,
                seed: int, budget: Budget | None = None) -> grain.MapDataset:
  """History -> the target and a reason (`because`: the most recent history item sharing
  attributes with the target, and what they share). Users whose target shares nothing with the
  history are left out; so is (as None, which grain skips) a user whose reason item is older than
  the items that fit `budget`: an answer must not name an item the prompt lacks."""
  usable = [(u, found) for u in range(len(sequences))
            if (found := because(sequences[u], attrs, max_history))]

  def build(index, row):
    u, (h, shared) = row
    example = sequences[u]
    rng = _rng(seed, "explanation", index)
    items = [sids[i] for i in example["history"][-max_history:]]
    write = _items(EXPLANATION[int(rng.integers(len(EXPLANATION)))])
    answer = f"{sids[int(example['target'])]}: like {sids[h]}, it is {reason(shared)}."
    kept = items if budget is None else budget.newest(write, items, answer)
    if sids[h] not in kept:
      return None
    return {"task": "explanation", "user": u, "prompt": write(kept), "answer": answer}

  reasons = sorted({reason(shared) for _, (_, shared) in usable})
  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(usable).map_with_index(build), [
      {"task": "explanation", "prompt": t.format(items=one),
       "answer": f"{one}: like {one}, it is {r}."} for r in reasons for t in EXPLANATION])


BUNDLE_KEYS = ("platform", "brand", "franchise", "genre")


def bundles(attrs: list[dict], sids: list[str], seed: int, held_out: bool) -> grain.MapDataset:
  """2-4 items sharing an attribute value -> a name made from every attribute they all share.

  Training bundles use training items only; held-out bundles hold one held-out item each (plus
  training items from one of its groups). One example per group of training items per 3 members,
  or per held-out item and group."""
  train_rows = _item_rows(len(attrs), seed, held_out=False)
  groups: dict[tuple[str, str], list[int]] = {}
  for i in train_rows:
    for key in BUNDLE_KEYS:
      if key in attrs[i]:
        groups.setdefault((key, attrs[i][key]), []).append(i)
  if held_out:
    draws = [(i, groups[(k, attrs[i][k])]) for i in _item_rows(len(attrs), seed, True)
             for k in BUNDLE_KEYS if (k, attrs[i].get(k)) in groups]
  else:
    draws = [(None, members) for members in groups.values() if len(members) >= 2
             for _ in range(max(1, len(members) // 3))]

  def build(index, draw):
    first, members = draw
    rng = _rng(seed, "bundle", index)
    size = int(rng.integers(2, 5))
    head = [] if first is None else [first]
    others = rng.choice(members, min(size - len(head), len(members)), replace=False)
    chosen = head + [int(i) for i in others]
    shared = attrs[chosen[0]]
    for i in chosen[1:]:
      shared = common_attributes(shared, attrs[i])
    template = BUNDLE[int(rng.integers(len(BUNDLE)))]
    return {"task": "bundle", "prompt": template.format(items=", ".join(sids[i] for i in chosen)),
            "answer": bundle_name(shared), "items": chosen}

  return grain.MapDataset.source(draws).map_with_index(build)


def multi_turn(sequences, attrs: list[dict], sids: list[str], max_history: int,
               seed: int, budget: Budget | None = None) -> grain.MapDataset:
  """A short conversation: the last history item is the first recommendation, then the user asks
  for something else (a constraint the target meets, preferably one the first item does not) and
  the target is the answer. Users with fewer than 2 history items or an attribute-less target are
  left out."""
  item_constraints = [constraints(a) for a in attrs]
  usable = [u for u in range(len(sequences)) if len(sequences[u]["history"]) >= 2
            and item_constraints[int(sequences[u]["target"])]]

  def build(index, u):
    example = sequences[u]
    rng = _rng(seed, "multi_turn", index)
    history = [int(i) for i in example["history"]][-max_history - 1:]
    options = item_constraints[int(example["target"])]
    new = _informative(options, item_constraints[history[-1]])
    template = MULTI_TURN[int(rng.integers(len(MULTI_TURN)))]
    write = _items(template, first=sids[history[-1]], constraint=new[int(rng.integers(len(new)))])
    answer = sids[int(example["target"])]
    return {"task": "multi_turn", "user": u, "answer": answer,
            "prompt": _fitted(budget, write, [sids[i] for i in history[:-1]], answer)}

  requests = sorted({c for u in usable for c in item_constraints[int(sequences[u]["target"])]})
  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(usable).map_with_index(build), [
      {"task": "multi_turn", "prompt": t.format(items=one, first=one, constraint=r),
       "answer": one, "request": r} for r in requests for t in MULTI_TURN])


# What each task needs from the data: the reason logged when a task has no examples.
NEEDS = {
    "next_item": "user histories",
    "steering": "next items with a platform, genre, brand or product type",
    "co_purchase": "users with two or more items",
    "text_to_sid": "catalog items",
    "sid_to_text": "catalog items",
    "explanation": "next items sharing an attribute (platform, genre, brand, franchise, product "
                   "type) with an item of the history",
    "bundle": "items sharing an attribute (platform, brand, franchise, genre)",
    "multi_turn": "users with two or more history items and a next item with an attribute",
}


def without_empty(found: dict[str, grain.MapDataset], what: str) -> dict[str, grain.MapDataset]:
  """The tasks that have examples; each empty one is named in the log with what it lacks."""
  for name, source in found.items():
    if len(source) == 0:
      logging.info("lm task %s: no %s examples (the data has no %s); left out of the mixture",
                   name, what, NEEDS[name])
  kept = {name: source for name, source in found.items() if len(source)}
  if not kept:
    raise ValueError(f"no LM task has {what} examples")
  return kept


def later_items(*splits) -> list[set[int]]:
  """Per user, the targets of the given later splits (what training must never answer with)."""
  records = [read_all(split) for split in splits]
  return [{int(split[u]["target"]) for split in records} for u in range(len(records[0]))]


def sources(sequences, items, sids: list[str], max_history: int, seed: int,
            held_out: bool = False, history_loss: bool = False,
            later: list[set[int]] | None = None,
            budget: Budget | None = None) -> dict[str, grain.MapDataset]:
  """Every task's source: training examples, or (held_out=True) the evaluation examples
  (`sequences` is then the validation split). `later`: each user's items of the later splits
  (later_items), which the steering task's catalog-drawn answers avoid. `budget`: the tokenizer
  and seq_len the histories and item texts are cut to (None: they stay whole)."""
  sequences, attrs = read_all(sequences), item_attributes(items)
  bands = [price_bands(items[i]) for i in range(len(items))]
  out = {"next_item": next_item(sequences, sids, max_history, seed, history_loss, budget),
         "steering": steering(sequences, attrs, sids, max_history, seed, later, bands, budget),
         "co_purchase": co_purchase(sequences, sids, seed),
         **item_tasks(items, sids, seed, held_out=held_out, budget=budget),
         "explanation": explanation(sequences, attrs, sids, max_history, seed, budget),
         "bundle": bundles(attrs, sids, seed, held_out=held_out),
         "multi_turn": multi_turn(sequences, attrs, sids, max_history, seed, budget)}
  assert tuple(out) == TASKS
  return out


def load_sids(path: str) -> list[str]:
  """Token strings per item index from WORKDIR/ids/semantic_ids.tsv."""
  return assign.read_table(path)[0]
