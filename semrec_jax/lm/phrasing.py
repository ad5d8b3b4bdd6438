"""How the LM's examples write things in words: the prompt templates of every task, an item's
attributes, requests ("something for PS4"), attribute descriptions, reasons ("for PS4 and by
Sony") and bundle names ("Nintendo 3DS accessories"). One home for the phrasing, so the task
builders (lm/tasks.py), the evaluation that parses and scores what the model writes, the chat
and the report all write and read the same words.

Templates (one is drawn per example from a seeded generator, so runs are reproducible):
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

from semrec_jax.data.tfds_builders import text

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


STEERING = (
    "A user bought: {items}. Now they want {constraint}. <|rec|>",
    "History: {items}. Recommend {constraint}. <|rec|>",
)


CO_PURCHASE = (
    "People who bought {item} also bought <|rec|>",
    "Bought together with {item}: <|rec|>",
)


MARKER = "…"  # ends an item text cut to fit seq_len


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


def common_attributes(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
  """The attributes two items have in common (same first value)."""
  return {k: v for k, v in a.items() if b.get(k) == v}
