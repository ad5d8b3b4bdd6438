"""The prompts evaluation and chat send to the LM: the first phrasing of each training template
(semrec_jax/lm/phrasing.py), so the model is asked the way it was taught."""

from semrec_jax.lm import phrasing


def history_items(history, sids: list[str], max_history: int) -> str:
  return ", ".join(sids[int(i)] for i in list(history)[-max_history:])


def next_item(history, sids: list[str], max_history: int) -> str:
  return phrasing.NEXT_ITEM[0].format(items=history_items(history, sids, max_history))


def steered(history, sids: list[str], max_history: int, request: str) -> str:
  return phrasing.STEERING[1].format(items=history_items(history, sids, max_history),
                                  constraint=request)


def text_to_sid(title: str) -> str:
  return phrasing.TEXT_TO_SID["title"][0].format(text=title)


def sid_to_text(sid: str) -> str:
  return phrasing.SID_TO_TEXT["title"][0].format(sid=sid)


def explanation(history, sids: list[str], max_history: int) -> str:
  return phrasing.EXPLANATION[0].format(items=history_items(history, sids, max_history))


def explanation_lead(tokenizer, sid: str) -> list[int]:
  """The start of a taught explanation answer, "<item SID>: like ", up to the compared item's ID
  (whose <|sid_start|> the decoder adds): the item is fixed, the model names the rest."""
  return tokenizer.encode(sid + ": like " + "<|sid_start|>")[:-1]


def bundle(items, sids: list[str]) -> str:
  return phrasing.BUNDLE[0].format(items=", ".join(sids[int(i)] for i in items))


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
  """Token lists as the LM saw prompts in training: [bos] + the prompt (in Gemma's turns where
  the tokenizer has them: Tokenizer.prompt_ids)."""
  return [[tokenizer.bos_id] + tokenizer.prompt_ids(t) for t in texts]
