"""A conversation with the recommender: what the user liked, what they asked for and the last list
shown are kept between messages, so follow-ups work ("cheaper", "for PS4", "why #2?", "make a
bundle of 1, 3 and 4 and name it", "more", "more like #1 but for 3DS"). Each message gets one
Reply."""

import dataclasses
import re

import numpy as np

from semrec_jax.chat.items import AmbiguousItem, Item, UnknownItem, words
from semrec_jax.chat.requests import NothingMatches, Request

MAX_CHARS = 2000
HELP = ('Tell me items you liked ("I loved Mario Kart 8 and Splatoon"; titles, ids or ASINs), '
        'ask in words ("something for Wii U, not a racing game", "under $20", "an accessory", '
        '"Zelda games"), then follow up: "why #2?", "make a bundle of 1, 3 and 4 and name it", '
        '"more like #1", "cheaper", "more", "reset", "quit".')
_LEAD = re.compile(r"^(?:and |also |but )?(?:i )?(?:really |also )?(?:loved|love|liked|like|"
                   r"enjoyed|enjoy|bought|buy|played|play|own|have|got|finished|adored)\b\s*(.*)$")
_PARTS = re.compile(r",|\band\b|&|\bplus\b")
_FILLER = set("""something some a an the for please now want i id d would rather like me
    recommend what should get next play buy more one thing things any anything give show with of to
    from by it is that maybe also just kind sort stuff not no without except nothing avoid never
    but dont isnt""".split())
_QUIT = ("quit", "exit", "bye", "goodbye", "q")
# "#2", "more like #2": an item of the last list, which joins what the user liked.
_LISTED = re.compile(r"(?:\b(?:more|something|anything|ones|stuff)\s+)?"
                     r"(?:\blike\s+|\bsimilar\s+to\s+)?#(\d+)\b", re.IGNORECASE)


def _extra(left: str) -> list[str]:
  """The words a request reader left unread that say something."""
  return [w for w in left.split() if w not in _FILLER]


@dataclasses.dataclass
class Reply:
  kind: str  # recommend | explain | bundle | help | reset | bye | error
  text: str
  items: list[Item] = dataclasses.field(default_factory=list)
  data: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {"kind": self.kind, "text": self.text,
            "items": [dataclasses.asdict(i) for i in self.items], **self.data}


class Session:
  """A conversation over a `Recommender` (chat/recommender.py, which builds sessions for its
  `chat` method, hence no import of it here)."""

  def __init__(self, recommender, k: int = 5):
    self.rec, self.k = recommender, k
    self.reset()

  def reset(self) -> None:
    self.history: list[int] = []
    self.request = Request()
    self.shown: list[Item] = []
    self.excluded: set[int] = set()

  def reply(self, message: str) -> Reply:
    said = " ".join((message or "").split())
    low = said.lower()
    if not said:
      return Reply("error", "Say something: " + HELP)
    if len(said) > MAX_CHARS:
      return Reply("error", f"That message has {len(said)} characters; keep it under "
                            f"{MAX_CHARS}.")
    if low.strip(" .!") in _QUIT:
      return Reply("bye", "Bye.")
    if low in ("help", "?", "h"):
      return Reply("help", HELP)
    if low in ("reset", "start over", "clear", "new"):
      self.reset()
      return Reply("reset", "Forgotten. Which items do you like?")
    if re.search(r"\bwhy\b", low):
      return self._explain(low)
    if re.search(r"\bbundle\b|\bname (them|these|it)\b", low):
      return self._bundle(low)
    notes = []
    if re.fullmatch(r"(show )?(me )?(some )?(more|others|other ones|something else)\W*", low):
      self.excluded |= {i.index for i in self.shown}
    else:
      self._read(said, notes)
    return self._recommend(notes)

  def _read(self, said: str, notes: list[str]) -> None:
    """Items and wishes in one message (into self.history, self.request); notes for the rest."""
    request = Request()
    said = _LISTED.sub(lambda m: self._listed(m, notes), said)
    for segment in re.split(r"[;.!?\n]", said):
      segment = segment.strip()
      lead = _LEAD.match(segment.lower())
      if not lead:
        found, left = self.rec.reader.read(segment)
        self._absent(found, notes)
        if found:
          request = request.merge(found)
          self._unused(left, notes)
          continue
      body = segment[len(segment) - len(lead.group(1)):] if lead else segment
      parts = [body] if self._resolve(body)[0] is not None else _PARTS.split(body)
      for part in (p.strip() for p in parts):
        if not part or set(words(part)) <= _FILLER:
          continue
        index, error = self._resolve(part)
        if index is not None and not set(words(part)) <= set(words(self.rec.catalog.titles[index])):
          notes.append(f'I took "{part}" to mean "{self.rec.catalog.titles[index]}".')
        found, left = self.rec.reader.read(part) if index is None else (None, "")
        if found is not None:
          self._absent(found, notes)
        if index is not None:
          self.history += [] if index in self.history else [index]
        elif found and not (_extra(left) and isinstance(error, AmbiguousItem)):
          request = request.merge(found)
          self._unused(left, notes)
        else:  # why the phrase names no item, or which items it may name ("Dragon Quest VIII":
          notes.append(self._why(part, error))  # more than the series, and two titles hold it)
    if re.search(r"\bcheaper\b", said.lower()):
      prices = [i.price for i in self.shown if i.price is not None]
      if prices:
        request.max_price = float(np.floor(np.median(prices)))
    if (request.max_price is not None or request.min_price is not None) and \
        not self.rec.catalog.has_prices:
      notes.append("This catalog has no prices, so I cannot filter by price.")
      request.max_price = request.min_price = None
      request.order = [k for k in request.order if k != "price"]
    if request:
      self.request = self._merged(request, notes)
      self.excluded = set()

  def _merged(self, newer: Request, notes: list[str]) -> Request:
    """The conversation's request with `newer` read into it. When no item meets them together,
    a newer wish wins: the earlier wishes are left out (exclusions and price kept), or, if that
    is not met either, everything asked before. A price alone ("cheaper") replaces nothing."""
    merged = self.request.merge(newer)
    if not self.request or not newer.wanted or self._met(merged):
      return merged
    for fewer, what in ((dataclasses.replace(merged, wanted=dict(newer.wanted),
                                             order=list(newer.order)), "your earlier wishes"),
                        (newer, "what you asked before")):
      if self._met(fewer):
        notes.append(f"Nothing is {merged.describe()}, so I left out {what}.")
        return fewer
    return merged

  def _met(self, request: Request) -> bool:
    """Whether any item outside the history meets `request`."""
    mask = request.mask(self.rec.catalog)
    mask[self.history] = False
    return bool(mask.any())

  def _listed(self, match: re.Match, notes: list[str]) -> str:
    """A reference to the last list ("#2"): its item is liked. A number the list lacks gets a
    note ("#553" is a catalog index only in Recommender.recommend / explain / name_bundle)."""
    n = int(match.group(1))
    if not 1 <= n <= len(self.shown):
      notes.append(f"There is no #{n}: the last list has {len(self.shown)} items." if self.shown
                   else f"There is no list yet to take #{n} from.")
      return " "
    index = self.shown[n - 1].index
    self.history += [] if index in self.history else [index]
    return " "

  def _resolve(self, part: str) -> tuple[int | None, Exception | None]:
    """(the item a phrase names, None), or (None, why not: UnknownItem / AmbiguousItem)."""
    try:
      return self.rec.catalog.resolve(part.strip().strip('"\'')), None
    except (AmbiguousItem, UnknownItem) as e:
      return None, e

  def _why(self, part: str, error: Exception) -> str:
    if isinstance(error, AmbiguousItem):
      listed = "; ".join(f"{self.rec.catalog.titles[i]} ({self.rec.catalog.ids[i]})"
                         for i in error.candidates)
      return f'Which "{part}" do you mean? {listed}. Say the full title or its id.'
    return f'I could not find "{part}" in the catalog.'

  def _absent(self, found: Request, notes: list[str]) -> None:
    if found.absent:
      here = ", ".join(list(self.rec.catalog.value_counts("platform"))[:8])
      notes.append(f"No item in this catalog is for {' or '.join(found.absent)} (platforms here "
                   f"include {here}).")

  @staticmethod
  def _unused(left: str, notes: list[str]) -> None:
    extra = _extra(left)
    if extra:
      notes.append(f"(I did not use: {' '.join(extra)})")

  def _recommend(self, notes: list[str]) -> Reply:
    if not self.history:
      return Reply("error", "\n".join(notes + [
          'Tell me a few items you liked first, e.g. "I loved Splatoon" (titles, ids or ASINs).']))
    try:
      items = self.rec.recommend(self.history, self.request, self.k, exclude=sorted(self.excluded))
    except NothingMatches as e:
      return Reply("error", "\n".join(notes + [f"{e}. Ask for something else, or 'reset'."]))
    self.shown = items
    titles = "; ".join(self.rec.catalog.titles[i] for i in self.history[-3:])
    head = f"Because you liked {titles}" + (" (and more)" if len(self.history) > 3 else "")
    if self.request:
      head += f", and asked for {self.request.describe()}"
    lines = notes + [head + ":"] + [f"  {n}. {item.line()}" for n, item in enumerate(items, 1)]
    guessed = [n for n, item in enumerate(items, 1) if item.inferred]
    if guessed:
      lines.append(f"  ({', '.join(f'#{n}' for n in guessed)}: the catalog does not say; their "
                   "nearest items do)")
    return Reply("recommend", "\n".join(lines), items,
                 {"history": [self.rec.catalog.item(i).title for i in self.history],
                  "request": self.request.describe(), "inferred": guessed})

  def _picked(self, low: str, default: int) -> list[Item] | str:
    if not self.shown:
      return "Ask for recommendations first, then refer to them by number."
    numbers = [int(n) for n in re.findall(r"\d+", low)] or list(range(1, default + 1))
    bad = [n for n in numbers if not 1 <= n <= len(self.shown)]
    if bad:
      return f"There is no #{bad[0]}: the last list has {len(self.shown)} items."
    return [self.shown[n - 1] for n in numbers]

  def _explain(self, low: str) -> Reply:
    picked = self._picked(low, 1)
    if isinstance(picked, str):
      return Reply("error", picked)
    lines, data = [], []
    for item in picked:
      e = self.rec.explain(self.history, item.index)
      checks = ", ".join(f"{value}: {'true' if ok else 'NOT true'}" for _, value, ok in e.claims)
      n = self.shown.index(item) + 1
      lines.append(f"#{n} {item.title}: {e.text}")
      lines.append(f"   (checked against the catalog: {checks})" if checks else
                   "   (the model named no attribute I can check)")
      data.append({"item": item.index, "text": e.text, "claims": e.claims})
    return Reply("explain", "\n".join(lines), picked, {"explanations": data})

  def _bundle(self, low: str) -> Reply:
    picked = self._picked(low, min(3, len(self.shown)))
    if isinstance(picked, str):
      return Reply("error", picked)
    if len(picked) < 2:
      return Reply("error", "A bundle needs at least two items, e.g. 'bundle 1, 2 and 3'.")
    b = self.rec.name_bundle([i.index for i in picked])
    lines = [f'"{b.name}"' + ("" if b.accurate else "  (the name claims something not true of "
                                                    "every item)")]
    lines += [f"  - {i.line()}" for i in picked]
    return Reply("bundle", "\n".join(lines), picked, {"name": b.name, "accurate": b.accurate})
