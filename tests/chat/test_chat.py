"""The Python API, the chat session and the chat command on the briefly trained sample LM."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from semrec_jax import Recommender
from semrec_jax.chat import AmbiguousItem, NothingMatches, Session, UnknownItem
from semrec_jax.chat.recommender import item_embeddings
from semrec_jax.chat.session import MAX_CHARS
from semrec_jax.data.errors import DataError
from tests.conftest import REPO


@pytest.fixture(scope="module")
def rec(trained_lm):
  workdir, _ = trained_lm
  return Recommender.from_workdir(str(workdir))


def _index(rec, title):
  return rec.catalog.titles.index(title)


def test_recommend_returns_k_distinct_catalog_items_outside_the_history(rec):
  history = ["Mario Kart 8", "Splatoon", _index(rec, "Super Mario 3D World - Nintendo Wii U")]
  indices = rec.items(history)
  for k in (1, 5, 12):
    found = rec.recommend(history, k=k)
    assert len(found) == k and len({i.index for i in found}) == k
    assert all(0 <= i.index < len(rec.catalog) and i.index not in indices for i in found)
    assert all(i.title == rec.catalog.titles[i.index] and i.id == rec.catalog.ids[i.index]
               for i in found)
    scores = [i.score for i in found]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
  steered = rec.recommend(history, text="something for PS4, not a racing game", k=10)
  assert len(steered) == 10
  assert all("PS4" in rec.catalog.values["platform"][i.index] and
             "Racing" not in rec.catalog.values["genre"][i.index] for i in steered)
  with pytest.raises(NothingMatches, match="No item in the catalog is"):
    rec.recommend(history, text="something for PS4 by Nyko, an accessory, not an accessory")
  with pytest.raises(AmbiguousItem):
    rec.recommend(["Mario Kart"])
  with pytest.raises(UnknownItem):
    rec.recommend(["B0NOTANASIN"])
  with pytest.raises(ValueError, match="at least 1"):
    rec.recommend(history, k=0)


def test_explanations_and_bundle_names_are_checked_against_the_catalog(rec):
  history = ["Mario Kart 8", "Splatoon"]
  pick = _index(rec, "Super Mario 3D World - Nintendo Wii U")
  e = rec.explain(history, pick)
  assert e.item.index == pick and e.like is not None and e.like.index in rec.items(history)
  assert e.claims and all(ok for _, _, ok in e.claims)  # Wii U items: a true reason exists
  assert e.text.startswith('like "') and "it is" in e.text
  wii_u = [i for i in range(len(rec.catalog)) if rec.catalog.values["platform"][i] == {"Wii U"}]
  bundle = rec.name_bundle(wii_u[:3])
  assert bundle.name and bundle.accurate and len(bundle.items) == 3
  with pytest.raises(ValueError, match="at least two"):
    rec.name_bundle(wii_u[:1])


def test_session_follow_ups_and_bad_input_get_one_clear_line(rec):
  s = Session(rec, k=4)
  assert s.reply("").kind == "error" and s.reply("   ").kind == "error"
  assert "under 2000" in s.reply("x" * (MAX_CHARS + 1)).text
  assert s.reply("why #2?").text == "Ask for recommendations first, then refer to them by number."
  assert s.reply("more like #7").text.startswith("There is no list yet to take #7 from.\n")
  first = s.reply("I loved Mario Kart 8 and Splatoon; something for Wii U, not a racing game")
  assert first.kind == "recommend" and len(first.items) == 4
  assert all("Wii U" in rec.catalog.values["platform"][i.index] for i in first.items)
  assert first.text.splitlines()[1].startswith("  1. ")
  why = s.reply("why #2?")
  assert why.kind == "explain" and why.items == [first.items[1]]
  assert s.reply("why #9").text == "There is no #9: the last list has 4 items."
  assert "There is no #9: the last list has 4 items." in s.reply("more like #9").text
  bundle = s.reply("make a bundle of 1, 3 and 4 and name it")
  assert bundle.kind == "bundle" and [i.index for i in bundle.items] == [
      first.items[n].index for n in (0, 2, 3)]
  ps4 = s.reply("for PS4")
  assert all("PS4" in rec.catalog.values["platform"][i.index] for i in ps4.items)
  assert "not Racing" in ps4.text  # the earlier exclusion is kept
  more = s.reply("more")
  assert not {i.index for i in more.items} & {i.index for i in ps4.items}
  unknown = s.reply("I loved Zzyzx Qwerty")
  assert 'I could not find "Zzyzx Qwerty" in the catalog.' in unknown.text
  cheaper = s.reply("cheaper")
  assert "This catalog has no prices" in cheaper.text
  assert json.dumps(cheaper.to_json(), default=str)
  # Names the 2018 catalog lacks (Splatoon 2, PS5) are said, not dropped.
  other = Session(rec).reply("I loved Mario Kart 8 and Splatoon 2; something for PS5, not a "
                             "racing game")
  assert other.kind == "recommend"
  assert 'I took "Splatoon 2" to mean "Splatoon".' in other.text
  assert "No item in this catalog is for PS5 (platforms here include " in other.text
  assert all("Racing" not in rec.catalog.values["genre"][i.index] for i in other.items)
  by = Session(rec).reply("I loved Splatoon; something by Nintendo")
  assert by.data["request"] == "brand Nintendo" and "did not use" not in by.text
  # Two titles hold "Dragon Quest VIII": it is asked about, not read as the brand it begins with.
  dq = Session(rec).reply("I loved Splatoon and Dragon Quest VIII")
  assert 'Which "Dragon Quest VIII" do you mean?' in dq.text and dq.data["request"] == ""
  # The last list by number ("more like #2") joins the history; a series is read with the
  # earlier wishes; an ambiguous title lists ids to answer with; "quit" says goodbye.
  assert s.reply("reset").kind == "reset"
  wii_u = s.reply("I loved Mario Kart 8; something for Wii U")
  liked = s.reply("show me more like #2 but for 3DS")
  assert liked.data["history"] == ["Mario Kart 8 - Nintendo Wii U", wii_u.items[1].title]
  assert liked.data["request"] == "platform 3DS" and "did not use" not in liked.text
  zelda = s.reply("Zelda games please")
  assert zelda.kind == "recommend" and "franchise The Legend of Zelda" in zelda.data["request"]
  assert all(rec.catalog.holds("franchise", {"The Legend of Zelda"})[i.index] and
             "3DS" in rec.catalog.values["platform"][i.index] for i in zelda.items)
  vita = s.reply("for PS Vita")  # no Zelda game is for PS Vita: the older wish is left out
  assert vita.text.startswith("Nothing is platform PS Vita, franchise The Legend of Zelda, so I "
                              "left out your earlier wishes.\n")
  assert vita.data["request"] == "platform PS Vita" and vita.items
  which = s.reply("I loved Mario Kart")
  assert f"Mario Kart 7 ({rec.catalog.ids[_index(rec, 'Mario Kart 7')]})" in which.text
  assert s.reply("Quit.").kind == "bye"
  answer = rec.chat([{"role": "user", "content": "I loved Splatoon"},
                     {"role": "assistant", "content": "..."},
                     {"role": "user", "content": "something for Wii U"}])
  assert answer.kind == "recommend" and answer.data["history"] == ["Splatoon"]


def test_wishes_met_by_values_of_the_nearest_items_are_marked(rec, demo_workdir, tmp_path):
  guessing = Recommender(rec.lm, workdir=demo_workdir)  # the same data, with its embeddings
  catalog = guessing.catalog
  assert rec.catalog.embeddings is None and catalog.embeddings.shape == (len(catalog), 384)
  known = catalog.holds("genre", {"RPG"}, inferred=False)
  guessed = catalog.holds("genre", {"RPG"}) & ~known
  found = guessing.recommend(["Splatoon"], "an RPG", k=5, exclude=np.flatnonzero(known).tolist())
  assert len(found) == 5 and all(guessed[i.index] and i.inferred for i in found)
  plain = guessing.recommend(["Splatoon"], "an RPG", k=10)  # catalog RPGs and inferred ones
  assert [i.inferred for i in plain] == [not known[i.index] for i in plain]
  assert not any(i.inferred for i in guessing.recommend(["Splatoon"], k=3))  # no wish
  s = Session(guessing, k=5)
  first = s.reply("I loved Splatoon; an RPG please")
  marked = [n for n, i in enumerate(first.items, 1) if guessed[i.index]]
  assert first.data["inferred"] == marked and all(known[i.index] or guessed[i.index]
                                                  for i in first.items)
  assert ("the catalog does not say; their nearest items do" in first.text) == bool(marked)
  s.excluded |= set(np.flatnonzero(known).tolist())  # "more", past every catalog RPG
  more = s.reply("more")
  assert more.data["inferred"] == [1, 2, 3, 4, 5] and all(guessed[i.index] for i in more.items)
  assert more.text.endswith("\n  (#1, #2, #3, #4, #5: the catalog does not say; their nearest "
                            "items do)")
  # Embeddings of other items than the catalog's are an error naming the file.
  (tmp_path / "embeddings").mkdir()
  np.save(tmp_path / "embeddings" / "items.npy", np.zeros((len(catalog), 4), np.float32))
  (tmp_path / "embeddings" / "item_ids.txt").write_text("".join(
      i + "\n" for i in reversed(catalog.ids)))
  with pytest.raises(DataError, match="embeddings/item_ids.txt lists other items"):
    item_embeddings(str(tmp_path), catalog)


def _chat(workdir, *args, **kwargs):
  return subprocess.run([sys.executable, "-m", "semrec_jax.chat", f"--workdir={workdir}", *args],
                        capture_output=True, text=True, cwd=REPO, timeout=300, **kwargs)


def test_chat_command_one_shot_json_repl_and_ctrl_c(trained_lm, tmp_path):
  workdir, _ = trained_lm
  done = _chat(workdir, "--prompt=I loved Splatoon; something for Wii U", "--prompt=why #1?",
               "--prompt=quit", "--prompt=for PS4", "--json")
  assert done.returncode == 0, done.stderr
  replies = [json.loads(line) for line in done.stdout.splitlines()]
  assert [r["kind"] for r in replies] == ["recommend", "explain", "bye"]  # nothing after quit
  assert len(replies[0]["items"]) == 5 and "Traceback" not in done.stderr
  assert _chat(tmp_path, "--prompt=hi").stderr.strip().startswith("error: no trained LM in")
  out_path = tmp_path / "out.txt"
  with open(out_path, "w") as out:
    repl = subprocess.Popen([sys.executable, "-m", "semrec_jax.chat", f"--workdir={workdir}"],
                            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    repl.stdin.write("Zzyzx Qwerty\n\nSplatoon\n")
    repl.stdin.flush()
    deadline = time.time() + 240
    while "  5. " not in out_path.read_text() and time.time() < deadline:
      time.sleep(0.5)
    repl.send_signal(signal.SIGINT)
    _, stderr = repl.communicate(timeout=60)
  text = out_path.read_text()
  assert 'I could not find "Zzyzx Qwerty" in the catalog.' in text
  assert "Say something" in text and "Because you liked Splatoon:" in text
  assert text.rstrip().endswith("(interrupted) bye") and "Traceback" not in stderr, (
      f"exit {repl.returncode}; output ends {text[-200:]!r}; stderr {stderr[-2000:]!r}")
