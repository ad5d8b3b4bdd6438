r"""Chat with a trained run: recommendations from what you liked, steering in words, explanations
and bundle names.

  python -m semrec_jax.chat --workdir=/tmp/semrec_demo
  python -m semrec_jax.chat --workdir=/tmp/semrec_demo \
      --prompt "I loved Mario Kart 8 and Splatoon; something for Wii U, not a racing game" \
      --prompt "why #2?" [--json]

Each --prompt is one user message (answered in order, then the command exits); without --prompt
it reads messages from the terminal (or stdin) until "quit", an empty line twice, Ctrl-D or Ctrl-C.
"""

import json
import signal
import sys

from absl import app, flags

from semrec_jax import console
from semrec_jax.chat.items import AmbiguousItem, UnknownItem
from semrec_jax.chat.recommender import Recommender
from semrec_jax.chat.session import HELP, Session
from semrec_jax.data.errors import DataError
from semrec_jax.eval.restore import MissingArtifact

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a run whose lm stage finished.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of the final LM stage (default: latest).")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "A message to answer (repeat for a conversation); "
                                    "the command exits after the last.")
_JSON = flags.DEFINE_bool("json", False, "Print each reply as one JSON line.")
_K = flags.DEFINE_integer("k", 5, "Recommendations per reply.")
flags.mark_flags_as_required(["workdir"])


def _answer(session: Session, message: str) -> str:
  """Prints the reply to one message; returns its kind ("bye" ends the chat)."""
  try:
    reply = session.reply(message)
  except (UnknownItem, AmbiguousItem, ValueError) as e:
    reply = None
    text = f"error: {e}"
  if _JSON.value:
    print(json.dumps(reply.to_json() if reply else {"kind": "error", "text": text},
                     ensure_ascii=False, default=str), flush=True)
  else:
    print(reply.text if reply else text, flush=True)
  return reply.kind if reply else "error"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]} (put a message in --prompt \"...\")")
  console.setup()
  if _K.value < 1:
    sys.exit("error: --k must be at least 1")
  try:
    recommender = Recommender.from_workdir(_WORKDIR.value, _STEP.value)
  except (MissingArtifact, FileNotFoundError, DataError) as e:
    sys.exit(f"error: {e}")
  session = Session(recommender, _K.value)
  # Ctrl-C ends the chat with a goodbye even when it was started from a background job, whose
  # SIGINT is ignored (Python then never raises KeyboardInterrupt).
  signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    if _PROMPT.value:
      for message in _PROMPT.value:
        if _answer(session, message) == "bye":
          return
      return
    interactive = sys.stdin.isatty()
    if interactive:
      print(f"semrec_jax chat ({_WORKDIR.value}, step {recommender.lm.step}). {HELP}")
    empty = 0
    while True:
      try:
        message = input("you> " if interactive else "")
      except EOFError:
        return
      empty = empty + 1 if not message.strip() else 0
      if empty >= 2:
        return
      if not interactive:
        print(f"you> {message}")
      if _answer(session, message) == "bye":
        return
  except KeyboardInterrupt:
    print("\n(interrupted) bye", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
