"""Language metrics: title -> semantic ID, semantic ID -> title, explanation faithfulness and
bundle naming, on held-out items and users, from greedy generation and constrained beam search.

Explanations are taught as "<item>: like <history item>, it is <reason>." with a reason built from
the attributes the two items share ("for PS4 and by Sony"). The eval fixes the item (the user's
true next item, for users where it shares an attribute with a history item, as in training), so
the metric measures the reason and not which item the model chose to recommend: the model picks the
history item (the best scored of the history) and writes the reason; each clause of it is a claim,
true when both items hold that attribute value. A bundle name is accurate when it mentions
at least one attribute value and every value it mentions is held by all the bundle's items."""

import collections
import re

import numpy as np

from semrec_jax.data.tfds_builders import text
from semrec_jax.eval import prompts
from semrec_jax.lm import fitting, phrasing, tasks

_SID = re.compile(r"<\|sid_start\|>((?:<\|sid_\d+\|>)*)<\|sid_end\|>")
_CODE = re.compile(r"<\|sid_(\d+)\|>")
ATTRIBUTE_KINDS = ("platform", "genre", "brand", "franchise", "product_type")


def normalise(s: str) -> str:
  return " ".join(re.sub(r"[^0-9a-z]+", " ", s.lower()).split())


def parse_items(generated: str, trie) -> list[int]:
  """Item indices of the semantic IDs written in `generated` (-1 for an ID naming no item)."""
  out = []
  for body in _SID.findall(generated):
    numbers = [int(n) for n in _CODE.findall(body)]
    codes = [n - level * trie.codebook_size for level, n in enumerate(numbers)]
    valid = len(codes) == trie.levels and all(0 <= c < trie.codebook_size for c in codes)
    out.append(trie.lookup(codes) if valid else -1)
  return out


def item_values(items) -> list[dict[str, set[str]]]:
  """Each item's lower-cased value set per attribute kind."""
  return [{kind: {v.strip().lower() for v in text(items[i][kind]).split("|") if v.strip()}
           for kind in ATTRIBUTE_KINDS} for i in range(len(items))]


def claims(reason: str) -> list[tuple[str, str]]:
  """(kind, value) claims of an explanation's reason, in the phrasing of phrasing.reason."""
  out = []
  for part in reason.strip().rstrip(".").split(" and "):
    part = part.strip()
    if part.startswith("for "):
      out.append(("platform", part[4:]))
    elif part.startswith("by "):
      out.append(("brand", part[3:]))
    elif part.startswith("part of the ") and part.endswith(" series"):
      out.append(("franchise", part[len("part of the "):-len(" series")]))
    elif (m := re.fullmatch(r"an? (.+) game", part)):
      out.append(("genre", m.group(1)))
    elif (m := re.fullmatch(r"an? (.+)", part)):
      out.append(("product_type", m.group(1)))
  return [(k, v.lower()) for k, v in out]


def explanation_claims(generated: str, trie, values) -> tuple[int, int, dict]:
  """(true claims, claims, parsed) of one generated explanation."""
  found = parse_items(generated, trie)
  reason = generated.split(", it is ", 1)[1] if ", it is " in generated else ""
  pair = found[:2] if len(found) >= 2 else [-1, -1]
  said = claims(reason)
  return claims_held(said, pair, values), len(said), {"items": pair, "claims": said}


def known_values(values) -> dict[str, set[str]]:
  """Every value of each attribute kind in the catalog."""
  return {kind: set().union(*(v[kind] for v in values)) - {""} for kind in ATTRIBUTE_KINDS}


def bundle_name_accurate(name: str, members: list[int], values, known=None) -> bool:
  """The name claims at least one attribute (a catalog value of any item, not only the members',
  or a kind noun such as "accessories") and every claim is held by all members: a name that says
  nothing checkable ("great picks", ID tokens) is not accurate. `known`: known_values(values),
  computed once by callers that check many names."""
  words = f" {normalise(name)} "
  known = known or known_values(values)
  named = sorted(((normalise(v), kind, v) for kind in ATTRIBUTE_KINDS if kind != "product_type"
                  for v in known[kind]), key=lambda n: -len(n[0]))
  claimed = 0
  for phrase, kind, value in named:  # longest first: "wii u" is not also a claim of "wii"
    if phrase and f" {phrase} " in words:
      if not all(value in values[i][kind] for i in members):
        return False
      claimed += 1
      words = words.replace(f" {phrase} ", " | ")
  for kind_value, (one, several) in phrasing.KIND_NOUNS.items():
    if f" {several} " in words or f" {one} " in words:
      if not all(kind_value.lower() in values[i]["product_type"] for i in members):
        return False
      claimed += 1
  return claimed > 0


def _decode(tokenizer, rows: np.ndarray) -> list[str]:
  out = []
  for row in rows.tolist():
    if tokenizer.eos_id in row:
      row = row[:row.index(tokenizer.eos_id)]
    out.append(tokenizer.decode(row))
  return out


def explainable(record, attrs, max_history: int) -> bool:
  """The user's next item shares an attribute with one of the history items the prompt shows."""
  return tasks.because(record, attrs, max_history) is not None


def most_taught_reason(train_records: list[dict], attrs, max_history: int) -> str | None:
  """The reason the explanation task teaches most often ("for PS4"), over the training split's
  first 50,000 users: the answer of a model that says the same for every pair."""
  counts = collections.Counter(
      phrasing.reason(found[1]) for r in train_records[:50_000]
      if (found := tasks.because(r, attrs, max_history)))
  return counts.most_common(1)[0][0] if counts else None


def claims_held(said: list[tuple[str, str]], pair, values) -> int:
  """How many of the claims `said` (claims()) both items of `pair` hold."""
  return sum(all(i >= 0 and v in values[i][k] for i in pair) for k, v in said)


REASON_TOKENS = 32  # the longest reason an explanation writes after the compared item
NAME_TOKENS = 24    # the longest bundle name


def compared_items(decoder, lm, records: list[dict],
                   max_history: int) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
  """The explanation prompt of each user's true next item up to "<next item>: like " (its
  lead), the history items the prompt shows [n, width] (a short history padded with its first
  item) and the model's log-probability of each as the compared item [n, width] (-inf on
  padding): `eval` explains with the best, the preference stage samples among them."""
  tok, sids = lm.tokenizer, lm.sids
  shown = [[int(h) for h in list(r["history"])[-max_history:]] for r in records]
  if not all(shown):
    raise ValueError("an explanation compares with a history item; a record has no history")
  width = max(len(h) for h in shown)
  padded = np.array([h + h[:1] * (width - len(h)) for h in shown])
  leads = [p + prompts.explanation_lead(tok, sids[int(r["target"])]) for p, r in zip(
      prompts.encode(tok, [prompts.explanation(h, sids, max_history) for h in shown]), records)]
  scores = np.array(decoder.score(leads, lm.codes[padded]), np.float64)
  scores[np.arange(width)[None, :] >= np.array([len(h) for h in shown])[:, None]] = -np.inf
  return leads, padded, scores


def explanation_prompts(decoder, lm, records: list[dict],
                        max_history: int) -> tuple[list[list[int]], list[int]]:
  """(prompt tokens, compared item) of each user's true next item: the explanation prompt, then
  "<next item>: like " and the best scored of the history items the prompt shows; the model
  writes the reason after it."""
  if not records:
    return [], []
  leads, shown, scores = compared_items(decoder, lm, records, max_history)
  picks = shown[np.arange(len(records)), np.argmax(scores, axis=1)].tolist()
  return [a + lm.tokenizer.encode(lm.sids[p]) for a, p in zip(leads, picks)], picks


def explanation_text(lm, record, pick: int, reason: str) -> str:
  """The whole explanation as `explanation_claims` reads it: "<next>: like <pick><reason>"."""
  return f"{lm.sids[int(record['target'])]}: like {lm.sids[pick]}{reason}"


def explanations(decoder, lm, records: list[dict], max_history: int) -> tuple[list[str], list[int]]:
  """(the model's explanation, the history item it compares with) of each user's true next item,
  the reason in the model's own words (greedy) after explanation_prompts."""
  asked, picks = explanation_prompts(decoder, lm, records, max_history)
  if not asked:
    return [], []
  reasons = _decode(lm.tokenizer, decoder.generate(asked, REASON_TOKENS))
  return [explanation_text(lm, r, p, g) for r, p, g in zip(records, picks, reasons)], picks


def evaluate(decoder, lm, held_out_items: np.ndarray, records: list[dict], bundles,
             max_history: int, explain_users: int, attrs: list[dict], taught: str | None,
             reasons: dict) -> tuple[dict, list[dict]]:
  """(metrics, samples) for the language metrics (None, with the reason in `reasons`, where one
  cannot be computed). `records`: the evaluated users, of whom the first `explain_users` whose
  next item shares an attribute with their history are asked for an explanation; beside the
  model's faithfulness, that of `taught` (most_taught_reason) said for the same pairs. `attrs`:
  phrasing.item_attributes of the catalog."""
  tok, out, samples = lm.tokenizer, {}, []
  values = item_values(lm.items)
  # Titles as the LM was taught them (cut where too long for its seq_len, fitting.Budget): asked
  # with, scored against, and given the tokens to write them whole.
  budget = fitting.Budget(tok, lm.config.seq_len)
  titles = [fitting.taught_title(lm.items[int(i)], lm.sids[int(i)], budget) for i in held_out_items]
  found, _ = decoder.items(prompts.encode(tok, [prompts.text_to_sid(t) for t in titles]), 10)
  out["lang/text_to_sid_accuracy"] = float(np.mean(found[:, 0] == held_out_items))
  longest = max([len(tok.encode(t)) + 1 for t in titles], default=0)
  generated = _decode(tok, decoder.generate(prompts.encode(
      tok, [prompts.sid_to_text(lm.sids[int(i)]) for i in held_out_items]), max(48, longest)))
  matches = [normalise(g) == normalise(t) for g, t in zip(generated, titles)]
  out["lang/sid_to_text_match"] = float(np.mean(matches))
  samples += [{"kind": "sid_to_text", "item": int(i), "title": t, "generated": g}
              for i, t, g in list(zip(held_out_items, titles, generated))[:3]]

  explained = [r for r in records if explainable(r, attrs, max_history)][:explain_users]
  generated, picks = explanations(decoder, lm, explained, max_history)
  true = total = 0
  for r, g in zip(explained, generated):
    t, n, parsed = explanation_claims(g, lm.trie, values)
    true, total = true + t, total + n
    if len(samples) < 6:
      titles = [text(lm.items[int(i)]["title"]) if i >= 0 else None for i in parsed["items"]]
      samples.append({"kind": "explanation", "history": [
          text(lm.items[int(i)]["title"]) for i in list(r["history"])[-max_history:]],
                      "generated": g, **parsed, "item_titles": titles, "true_claims": t,
                      "claims_made": n})
  out["lang/explanation_users"] = len(explained)
  out["lang/explanation_faithfulness"] = true / total if total else None
  taught_claims = claims(taught) if taught else []
  said = len(taught_claims) * len(explained)
  out["lang/explanation_most_taught_reason_faithfulness"] = (sum(
      claims_held(taught_claims, [int(r["target"]), h], values)
      for r, h in zip(explained, picks)) / said if said else None)
  out["lang/explanation_related_pick"] = (float(np.mean(
      [bool(phrasing.common_attributes(attrs[int(r["target"])], attrs[h]))
       for r, h in zip(explained, picks)])) if explained else None)
  if not explained:
    reasons["lang/explanation_faithfulness"] = reasons["lang/explanation_related_pick"] = (
        "config.eval.explain_users is 0" if explain_users <= 0 else
        "no user's next item shares an attribute with their history")
  elif not total:
    reasons["lang/explanation_faithfulness"] = "no generated explanation made a claim"
  if out["lang/explanation_most_taught_reason_faithfulness"] is None:
    reasons["lang/explanation_most_taught_reason_faithfulness"] = (
        "the training split teaches no reason" if not taught else
        reasons["lang/explanation_faithfulness"] if not explained else
        f"the most taught reason {taught!r} makes no claim")

  members = [[int(i) for i in parse_items(b["prompt"], lm.trie)] for b in bundles]
  if members:
    names = _decode(tok, decoder.generate(prompts.encode(
        tok, [prompts.bundle(m, lm.sids) for m in members]), NAME_TOKENS))
    known = known_values(values)
    accurate = [bundle_name_accurate(n, m, values, known) for n, m in zip(names, members)]
    out["lang/bundle_name_accuracy"] = float(np.mean(accurate))
    samples += [{"kind": "bundle", "items": [text(lm.items[i]["title"]) for i in m],
                 "generated": n, "accurate": a}
                for m, n, a in list(zip(members, names, accurate))[:3]]
  else:
    out["lang/bundle_name_accuracy"] = None
    reasons["lang/bundle_name_accuracy"] = "no held-out item shares an attribute with others"
  return out, samples
