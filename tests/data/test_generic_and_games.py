"""The generic layout and the Games benchmark layout (bundled sample and, when present, full data)."""

import csv
import gzip
import json
import os

import pytest

from semrec_jax import defaults
from semrec_jax.data import games_tsv, generic
from semrec_jax.data.errors import DataError
from semrec_jax.data.processing import build_sequences
from tests.conftest import SHARED_GAMES


def _write_generic(folder, items, interactions):
  with open(folder / "items.jsonl", "w", encoding="utf-8") as f:
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))
  with open(folder / "interactions.csv", "w", encoding="utf-8") as f:
    f.write("user_id,item_id,timestamp\n" + "".join(line + "\n" for line in interactions))


def test_generic_layout(tmp_path, data_config):
  _write_generic(tmp_path, [
      {"item_id": "a", "title": "Zelda &amp; Link — ゼルダ", "platform": "Nintendo Switch",
       "categories": ["Games", "Adventure"]},
      {"item_id": "b", "title": "Pad", "attributes": {"brand": "Sony", "product_type": "Accessory"},
       "details": {"Color": "Black"}},
      {"item_id": "c", "title": "Cable", "features": "2 m"},
      {"title": "no id"},
  ], ["u1,a,3", "u1,b,1", "u1,c,2", "u2,a,1", ",a,1", "u3,a,soon"])
  data_config.format, data_config.path = "generic", str(tmp_path)
  data_config.max_bad_fraction = 0.5
  catalog, interactions, drops = generic.read(data_config)
  assert catalog.item_ids == ["a", "b", "c"]
  a, b = catalog.row(0), catalog.row(1)
  assert a["title"] == "Zelda &amp; Link — ゼルダ" and a["platform"] == "Switch"
  assert a["categories"] == "Games\nAdventure"
  assert (b["brand"], b["product_type"], json.loads(b["details"])) == ("Sony", "Accessory",
                                                                        {"Color": "Black"})
  assert len(interactions) == 4
  assert dict(drops) == {"bad_line:missing_item_id": 1, "bad_line:missing_user_id": 1,
                         "bad_line:bad_timestamp": 1, "duplicate_item_rows": 0}
  seq = build_sequences(interactions, catalog, 0, drops)
  assert seq.user_ids == ["u1"] and seq.user_items(0).tolist() == [1, 2, 0]
  assert drops["kcore_users"] == 1


def test_generic_missing_column(tmp_path, data_config):
  _write_generic(tmp_path, [{"item_id": "a", "title": "A"}], [])
  (tmp_path / "interactions.csv").write_text("user,item_id,timestamp\n")
  data_config.format, data_config.path = "generic", str(tmp_path)
  with pytest.raises(DataError, match=r"interactions.csv: missing column\(s\) \['user_id'\]"):
    generic.read(data_config)


def test_games_sample(data_config):
  catalog, interactions, drops = games_tsv.read(data_config)  # default path: bundled sample
  assert data_config.path == defaults.SAMPLE_DIR
  assert len(catalog) == 2000 and len(interactions) == 155_133
  assert len(interactions.user_ids) == 19_080
  assert sum(drops.values()) == 0
  platforms = catalog.fields["platform"]
  assert 0.75 < sum(map(bool, platforms)) / len(platforms) < 0.9
  # The side file adds attributes the titles lack.
  assert sum(map(bool, catalog.fields["genre"])) > 300


def test_games_platform_column_is_corrected_by_the_title(tmp_path, data_config):
  """The column reads any 'switch' as the console, and a family's later console as its first
  ('PlayStation Portable' as PS1); the title's reading wins there, elsewhere the column holds."""
  rows = [("A1", "Keyboard with Cherry MX Red Switch", "Switch"), ("A2", "Kill Switch", "Switch"),
          ("A3", "Keyboard - Green Switch - PC", "Switch"),
          ("A4", "Just Dance 2017 - Nintendo Switch", "Switch"),
          ("A5", "Adapter for Wii U, PC USB and Switch", "Switch"),
          ("A6", "PlayStation Portable 3000 System - Piano Black", "PS1"),
          ("A7", "Thief Xbox one", "Xbox"), ("A8", "Nintendo 2DS - Electric Blue", "DS"),
          ("A9", "Mad Catz FightStick for PlayStation4 and PlayStation3", "PS1"),
          ("A10", "Final Fantasy VII - PlayStation", "PS1"), ("A11", "Halo - Xbox", "Xbox"),
          ("A12", "The Sims 4 - PC/Mac", "Mac"), ("A13", "Mario Kart DS", "DS"),
          ("A14", "Mlb 2K9 Xbox360", "Xbox"), ("A15", "Controller Adapter for PS1 & PS2", "PS1")]
  with open(tmp_path / "items.csv", "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows([("asin", "title", "platform_from_title")] + rows)
  (tmp_path / "sequences.tsv").write_text(
      "user_id\tasins\nu1\t" + " ".join(asin for asin, _, _ in rows) + "\n")
  data_config.path = str(tmp_path)
  catalog, _, _ = games_tsv.read(data_config)
  platform = dict(zip(catalog.item_ids, catalog.fields["platform"]))
  assert platform == {"A1": "", "A2": "", "A3": "PC", "A4": "Switch", "A5": "Switch",
                      "A6": "PSP", "A7": "Xbox One", "A8": "3DS", "A9": "PS4", "A10": "PS1",
                      "A11": "Xbox", "A12": "Mac", "A13": "DS", "A14": "Xbox 360", "A15": "PS1"}


def test_games_bad_lines(tmp_path, data_config):
  with gzip.open(os.path.join(defaults.SAMPLE_DIR, "items.csv.gz"), "rt") as f:
    (tmp_path / "items.csv").write_text(f.read())
  (tmp_path / "sequences.tsv").write_text(
      "user_id\tasins\nA1\tB00L59D9HG B00E1A1SP6 B004K6LQAS\nbroken line\n\tB00L59D9HG\n")
  data_config.path = str(tmp_path)
  with pytest.raises(DataError, match=r"sequences.tsv: 2 of 3 lines are bad.*sequences.tsv:3: "
                                      r"malformed_line.*sequences.tsv:4: missing_user_id"):
    games_tsv.read(data_config)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED_GAMES), reason="needs ../shared/data/amazon18_games")
def test_full_games_counts(data_config):
  data_config.path = SHARED_GAMES
  catalog, interactions, drops = games_tsv.read(data_config)
  seq = build_sequences(interactions, catalog, 5, drops)
  assert (seq.num_users, len(seq.catalog), len(seq.items)) == (50_546, 16_859, 452_989)
