"""The Python API: one trained workdir -> recommendations, steering, explanations, bundle names.

  from semrec_jax import Recommender
  rec = Recommender.from_workdir("/tmp/semrec_demo")
  for item in rec.recommend(["Mario Kart 8", "Splatoon"], text="something for Wii U", k=5):
      print(item.title, item.score)
  print(rec.explain(["Mario Kart 8", "Splatoon"], "Super Mario 3D World").text)

Items may be given as catalog indices, ids (ASINs) or titles (any words of one). Recommendations
come from trie-constrained beam search, so each is a real, distinct item; a steering `text` is put
to the model in the phrasing it was taught, and the search is restricted to items that meet it and
that are not in the history.
"""

import dataclasses
import itertools
import os
import re

import numpy as np

from semrec_jax import parallel, storage
from semrec_jax.chat.items import Catalog, Item
from semrec_jax.chat.requests import NothingMatches, Reader, Request
from semrec_jax.chat.session import Reply, Session
from semrec_jax.data import tfds_builders
from semrec_jax.data.errors import DataError
from semrec_jax.eval import language, prompts, restore
from semrec_jax.ids import stage as ids_stage
from semrec_jax.lm import decoding, phrasing

_SID = re.compile(r"<\|sid_start\|>(?:<\|sid_\d+\|>)*<\|sid_end\|>")
MAX_NEW_TOKENS = 48


@dataclasses.dataclass
class Explanation:
  item: Item
  text: str                          # the model's reason with items written as titles
  like: Item | None                  # the history item the model compares with
  claims: list[tuple[str, str, bool]]  # (attribute kind, value, true of both items)
  generated: str                     # the raw generated text (semantic-ID tokens)


@dataclasses.dataclass
class Bundle:
  items: list[Item]
  name: str
  accurate: bool  # every attribute value the name mentions is held by all the items


def item_embeddings(workdir: str, catalog: Catalog) -> np.ndarray | None:
  """The embed stage's vectors for `catalog` (row i = item i), or None when the workdir has none.
  Vectors of another catalog (a workdir re-prepared since) raise DataError."""
  if not storage.path(os.path.join(workdir, "embeddings", "items.npy")).is_file():
    return None
  again = "run the embed stage again (--stages=embed --overwrite)"
  try:
    vectors, ids = ids_stage.load_embeddings(workdir, len(catalog))
  except DataError as e:
    raise DataError(f"{e}: {again}") from e
  if ids != catalog.ids:
    raise DataError(f"{workdir}/embeddings/item_ids.txt lists other items than the catalog in "
                    f"{workdir}/data: {again}")
  return vectors


class Recommender:
  """A trained LM with its tokenizer, semantic IDs, trie and catalog, on the local devices."""

  def __init__(self, lm: restore.TrainedLM, mesh=None, workdir: str | None = None):
    rows = tfds_builders.read_all(lm.items)  # the catalog, read once for every view of it below
    self.lm, self.catalog = lm, Catalog(rows)
    if workdir:  # values the catalog lacks, from the nearest items (Catalog.inferred)
      self.catalog.use_embeddings(item_embeddings(workdir, self.catalog))
    self.attributes = phrasing.item_attributes(rows)  # first values, as the tasks phrase them
    self.values = language.item_values(rows)      # lower-case value sets, as claims are checked
    self.reader = Reader(self.catalog)
    self.decoder = decoding.SidDecoder(lm.model, lm.code_tokens, lm.sid_start, lm.trie,
                                       mesh=mesh, batch_size=1)
    self.max_history = lm.config.max_history

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None) -> "Recommender":
    """Restores the final LM stage's checkpoint at `step` (default: the latest), with the
    embed stage's item embeddings when the workdir has them (for the values wishes may be met
    by where the catalog gives none: Catalog.inferred)."""
    mesh = parallel.make_mesh()
    lm = restore.load(workdir, step=step, mesh=mesh)
    return cls(lm, mesh, workdir)

  def items(self, named) -> list[int]:
    """Catalog indices of items named by index, id or title (UnknownItem / AmbiguousItem)."""
    return [self.catalog.resolve(n) for n in named]

  def recommend(self, history, text: str | Request | None = None, k: int = 10,
                exclude=()) -> list[Item]:
    """The k best items after `history` (best first), steered by `text`; never an item of the
    history or of `exclude`. Raises NothingMatches when no item meets the request. An item that
    meets it only by values its nearest items suggest (the catalog does not say) is marked
    `inferred`."""
    if k < 1:
      raise ValueError(f"k must be at least 1, got {k}")
    history = self.items(history)
    if not history:
      raise ValueError("recommend needs at least one history item")
    request = text if isinstance(text, Request) else self.reader.read(text or "")[0]
    allowed = request.mask(self.catalog)
    allowed[history + self.items(exclude)] = False
    if not allowed.any():
      raise NothingMatches(f"No item in the catalog is {request.describe() or 'left'} "
                           "(outside the history)")
    phrase = request.phrase()
    said = (prompts.steered(history, self.lm.sids, self.max_history, phrase) if phrase else
            prompts.next_item(history, self.lm.sids, self.max_history))
    found, scores = self.decoder.items(prompts.encode(self.lm.tokenizer, [said]), max(k, 10),
                                       allowed=allowed)
    known = request.mask(self.catalog, inferred=False)  # by the catalog's own values
    return [dataclasses.replace(self.catalog.item(i, s), inferred=not known[i])
            for i, s in zip(found[0][:k], scores[0][:k]) if i >= 0]

  def _text(self, tokens) -> str:
    tokens, tok = list(tokens), self.lm.tokenizer
    return tok.decode(tokens[:tokens.index(tok.eos_id)] if tok.eos_id in tokens else tokens)

  def _generate(self, prompt_tokens: list[int]) -> str:
    return self._text(self.decoder.generate([prompt_tokens], MAX_NEW_TOKENS)[0].tolist())

  def titled(self, generated: str) -> str:
    """Generated text with each semantic ID written as its item's title."""
    def title(m):
      found = language.parse_items(m.group(0), self.lm.trie)
      return f'"{self.catalog.titles[found[0]]}"' if found and found[0] >= 0 else "(unknown item)"
    return _SID.sub(title, generated)

  def explain(self, history, item) -> Explanation:
    """Why `item` follows `history`, in the model's words ("like X, it is for Wii U and by
    Nintendo"): the model picks the history item to compare with (among those sharing an
    attribute with `item`, when any do) and the reason (among those true of both); when nothing
    is shared it writes its own reason, and each claim is checked against the catalog."""
    history, index = self.items(history), self.items([item])[0]
    tok, sids = self.lm.tokenizer, self.lm.sids
    prompt = prompts.encode(tok, [prompts.explanation(history, sids, self.max_history)])[0]
    lead = prompts.explanation_lead(tok, sids[index])
    candidates = [h for h in history[-self.max_history:] if h != index]
    related = [h for h in candidates if self.true_reasons(index, h)]
    compared = np.zeros(len(self.catalog), bool)
    compared[related or candidates] = True  # an item sharing something, when one does
    like = -1
    if compared.any():
      like = int(self.decoder.items([prompt + lead], 1, allowed=compared)[0][0, 0])
    generated = sids[index] + ": like " + (sids[like] if like >= 0 else "")
    reasons = self.true_reasons(index, like) if like >= 0 else []
    if reasons:  # the model picks among reasons true of both items, in the taught phrasing
      tails = [f", it is {r}." for r in reasons]
      start = len(tok.encode(sids[like]))
      scores = self.decoder.text_logprob(prompt + lead, [
          tok.encode(sids[like] + t)[start:] + [tok.eos_id] for t in tails])
      generated += tails[int(np.argmax(scores))]
    else:  # nothing shared: the model's own words, checked below
      generated += self._generate(prompt + lead + (tok.encode(sids[like]) if like >= 0 else []))
    _, _, parsed = language.explanation_claims(generated, self.lm.trie, self.values)
    checked = [(kind, value, bool(like >= 0 and all(value in self.values[i][kind]
                                                   for i in (index, like))))
               for kind, value in parsed["claims"]]
    return Explanation(self.catalog.item(index), self.titled(generated.split(":", 1)[1].strip()),
                       self.catalog.item(like) if like >= 0 else None, checked, generated)

  def true_reasons(self, a: int, b: int) -> list[str]:
    """Reasons (phrasing.reason) from the attributes items a and b share: each one alone and the
    two the training answer names."""
    shared = phrasing.common_attributes(self.attributes[a], self.attributes[b])
    if not shared:
      return []
    out = [phrasing.reason({k: v}) for k, v in shared.items()] + [phrasing.reason(shared)]
    return list(dict.fromkeys(out))

  def name_bundle(self, items) -> Bundle:
    """A short name for a set of items. The model picks among names made from attributes all the
    items share (every subset of them, in the taught phrasing: phrasing.bundle_name); items that
    share nothing get the model's own words, checked and marked when inaccurate."""
    members = self.items(items)
    if len(members) < 2:
      raise ValueError("a bundle needs at least two items")
    tok = self.lm.tokenizer
    prompt = prompts.encode(tok, [prompts.bundle(members, self.lm.sids)])[0]
    common = self.attributes[members[0]]
    for i in members[1:]:
      common = phrasing.common_attributes(common, self.attributes[i])
    keys = list(common)
    names = list(dict.fromkeys(
        phrasing.bundle_name({k: common[k] for k in subset})
        for size in range(1, len(keys) + 1) for subset in itertools.combinations(keys, size)))
    if names:
      scores = self.decoder.text_logprob(prompt, [tok.encode(n) + [tok.eos_id] for n in names])
      name = names[int(np.argmax(scores))]
    else:
      name = self._generate(prompt).strip()
    accurate = language.bundle_name_accurate(name, members, self.values)
    return Bundle([self.catalog.item(i) for i in members], name, accurate)

  def chat(self, messages: list[dict]) -> Reply:
    """The reply to the last user message of a conversation [{"role", "content"}, ...]: earlier
    user messages are replayed to rebuild what was said (items, wishes, the last list)."""
    session = Session(self)
    said = [m["content"] for m in messages if m.get("role", "user") == "user"]
    if not said:
      raise ValueError("chat needs at least one user message")
    for message in said[:-1]:
      session.reply(message)
    return session.reply(said[-1])
