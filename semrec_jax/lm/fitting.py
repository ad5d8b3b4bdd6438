"""What fits seq_len: an example's tokens counted as the pipeline will write them, so the task
builders cut histories and item texts by these rules.

Every example fits config.lm.seq_len, by these rules:
  - a history too long loses its oldest items, whole, never the instruction or part of a semantic
    ID;
  - an item's title (and a description's start) too long for any example that writes it (a
    text_to_sid prompt, a sid_to_text answer) is cut, at a word where it can be, to the most
    tokens every such example leaves (seq_len less its longest fixed part), and ends with MARKER
    ("…"); the cut title is the title everywhere (its fragments are drawn from it, and the
    evaluation asks and scores with it: taught_title). A title that fits is never changed.
  - nothing else is cut: attribute values, requests, reasons and bundle names are short and
    matched by name. Before the first step input_pipeline.longest measures every example of the item
    and bundle tasks and, for the tasks built from histories (whose examples only lose items), the
    shortest each can be cut to (`shortest`: one history item, every template and request); the
    lm stage refuses in one line an example that still cannot fit.
"""

import math

from semrec_jax.data.tfds_builders import text
from semrec_jax.lm.phrasing import MARKER, SID_TO_TEXT, TEXT_TO_SID


class Budget:
  """Counts an example's tokens as input_pipeline.tokenize will ([bos] prompt answer [eos]), so the
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
