"""The Amazon Reviews 2023 reader on fixtures in the official layout (real 2023 Video_Games items)."""

import gzip
import json
import os
import shutil

import numpy as np
import pytest

from semrec_jax.data import amazon2023
from semrec_jax.data.errors import DataError, DropLog
from semrec_jax.data.processing import build_sequences
from tests.conftest import AMAZON2023

# Ground truth of the fixture (526 real user sequences over 229 of the 1,000 items).
NUM_USERS, NUM_ITEMS, NUM_INTERACTIONS = 526, 229, 1822


@pytest.fixture
def config(data_config):
  data_config.format = "amazon2023"
  data_config.path = AMAZON2023
  data_config.category = "Video_Games"
  data_config.kcore = 0
  return data_config


@pytest.fixture
def copy_of_fixture(tmp_path, config):
  """A writable copy of the reviews-layout fixture (meta gzipped, reviews plain)."""
  for name in ("meta_Video_Games.jsonl.gz", "Video_Games.jsonl"):
    shutil.copy(os.path.join(AMAZON2023, name), tmp_path / name)
  config.path = str(tmp_path)
  return tmp_path


def test_reviews_layout_reads_every_interaction(config):
  catalog, interactions, drops = amazon2023.read(config)
  assert len(interactions) == NUM_INTERACTIONS
  assert len(interactions.user_ids) == NUM_USERS
  assert len(catalog) == NUM_ITEMS  # only interacted items are kept from the 1,000 meta rows
  assert sum(drops.values()) == 0
  assert all(catalog.fields["title"])
  switch_games = [catalog.row(r) for r in range(len(catalog))
                  if catalog.fields["categories"][r].split("\n")[:3] == ["Video Games",
                                                                          "Nintendo Switch", "Games"]]
  assert switch_games and all(g["platform"] == "Switch" and g["product_type"] == "Game"
                              for g in switch_games)


def test_benchmark_csvs_pool_to_the_review_sequences(tmp_path, config):
  shutil.copy(os.path.join(AMAZON2023, "meta_Video_Games.jsonl.gz"), tmp_path)
  shutil.copytree(os.path.join(AMAZON2023, "benchmark", "5core"), tmp_path / "5core")
  catalog_r, reviews, _ = amazon2023.read(config)
  config.path, config.interactions = str(tmp_path), "benchmark"
  catalog_b, bench, _ = amazon2023.read(config)
  seq_r = build_sequences(reviews, catalog_r, 0, DropLog())
  seq_b = build_sequences(bench, catalog_b, 0, DropLog())
  assert seq_b.catalog.item_ids == seq_r.catalog.item_ids  # both in meta-file order
  by_user_r = {u: [seq_r.catalog.item_ids[i] for i in seq_r.user_items(k)]
               for k, u in enumerate(seq_r.user_ids)}
  by_user_b = {u: [seq_b.catalog.item_ids[i] for i in seq_b.user_items(k)]
               for k, u in enumerate(seq_b.user_ids)}
  assert by_user_r == by_user_b
  assert len(by_user_b) == NUM_USERS


def _append(path, lines: list[str]) -> None:
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "at", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))


def test_malformed_lines_are_counted_and_located(copy_of_fixture, config, caplog):
  reviews = copy_of_fixture / "Video_Games.jsonl"
  _append(reviews, [
      '{"user_id": "U1", "parent_asin": "B0BRBWW8H4", "timestamp": 1',  # truncated JSON
      '{"parent_asin": "B0BRBWW8H4", "timestamp": 1}',                  # no user_id
      '{"user_id": "U1", "timestamp": 1}',                             # no parent_asin
      '{"user_id": "U1", "parent_asin": "B0BRBWW8H4", "timestamp": "yesterday"}',
      '[1, 2, 3]',
  ])
  config.max_bad_fraction = 0.01
  _, interactions, drops = amazon2023.read(config)
  assert len(interactions) == NUM_INTERACTIONS
  assert drops["bad_line:malformed_json"] == 2
  assert drops["bad_line:missing_user_id"] == 1
  assert drops["bad_line:missing_parent_asin"] == 1
  assert drops["bad_line:bad_timestamp"] == 1
  assert f"{reviews}:{NUM_INTERACTIONS + 1}: malformed_json" in caplog.text


def test_too_many_bad_lines_fail_with_file_and_line(copy_of_fixture, config):
  reviews = copy_of_fixture / "Video_Games.jsonl"
  _append(reviews, ["not json"] * 30)
  config.max_bad_fraction = 0.01
  with pytest.raises(DataError, match=rf"Video_Games.jsonl: 30 of {NUM_INTERACTIONS + 30} lines "
                                      rf"are bad.*Video_Games.jsonl:{NUM_INTERACTIONS + 1}"):
    amazon2023.read(config)
  config.max_bad_fraction = 0.05
  _, interactions, _ = amazon2023.read(config)
  assert len(interactions) == NUM_INTERACTIONS


def test_html_entities_and_non_ascii_titles_survive(copy_of_fixture, config):
  title = "Pokémon™ Mystery Dungeon &amp; Friends — 日本語版"
  _append(copy_of_fixture / "meta_Video_Games.jsonl.gz",
          [json.dumps({"parent_asin": "XTEST00001", "title": title, "categories": [],
                       "details": {"Brand": "Nintendo", "Platform": "Nintendo 3DS"}},
                      ensure_ascii=False)])
  _append(copy_of_fixture / "Video_Games.jsonl",
          ['{"user_id": "U1", "parent_asin": "XTEST00001", "timestamp": 5}'])
  catalog, _, _ = amazon2023.read(config)
  row = catalog.row(catalog.item_ids.index("XTEST00001"))
  assert row["title"] == title
  assert (row["brand"], row["platform"]) == ("Nintendo", "3DS")
  assert json.loads(row["details"]) == {"Brand": "Nintendo", "Platform": "Nintendo 3DS"}


def test_prices_are_kept_as_dollars_and_bad_ones_counted(copy_of_fixture, config):
  with gzip.open(os.path.join(AMAZON2023, "meta_Video_Games.jsonl.gz"), "rt") as f:
    raw = {m["parent_asin"]: m.get("price") for m in map(json.loads, f)}
  _append(copy_of_fixture / "meta_Video_Games.jsonl.gz",
          [json.dumps({"parent_asin": f"XPRICE{n}", "title": f"Priced {n}", "price": p})
           for n, p in enumerate(["$1,299.00", "from 5 to 9", None])])
  _append(copy_of_fixture / "Video_Games.jsonl",
          [f'{{"user_id": "U{n}", "parent_asin": "XPRICE{n}", "timestamp": 5}}' for n in range(3)])
  catalog, _, drops = amazon2023.read(config)
  prices = dict(zip(catalog.item_ids, catalog.fields["price"]))
  kept = [a for a in prices if a in raw]
  assert sum(raw[a] is not None for a in kept) > 100
  for asin in kept:
    assert prices[asin] == ("" if raw[asin] is None else f"{raw[asin]:.2f}")
  assert [prices[f"XPRICE{n}"] for n in range(3)] == ["1299.00", "", ""]
  assert drops["unparsed_price"] == 1  # "from 5 to 9": the item stays, without a price


def test_missing_files_name_path_and_layout(tmp_path, config):
  config.path = str(tmp_path)
  with pytest.raises(DataError, match=r"meta_Video_Games.jsonl\[.gz\].*expected meta_Video_Games"):
    amazon2023.read(config)
  shutil.copy(os.path.join(AMAZON2023, "meta_Video_Games.jsonl.gz"), tmp_path)
  with pytest.raises(DataError, match="no interactions found"):
    amazon2023.read(config)
  config.path = str(tmp_path / "nope")
  with pytest.raises(DataError, match="does not exist"):
    amazon2023.read(config)


def test_incomplete_benchmark_split_is_named(tmp_path, config):
  shutil.copy(os.path.join(AMAZON2023, "meta_Video_Games.jsonl.gz"), tmp_path)
  shutil.copy(os.path.join(AMAZON2023, "benchmark", "5core", "timestamp_w_his",
                           "Video_Games.train.csv"), tmp_path)
  config.path = str(tmp_path)
  with pytest.raises(DataError, match="incomplete benchmark split"):
    amazon2023.read(config)


def test_timestamps_order_each_user(config):
  catalog, interactions, _ = amazon2023.read(config)
  seq = build_sequences(interactions, catalog, 0, DropLog())
  for u in range(seq.num_users):
    ts = seq.timestamps[seq.offsets[u]:seq.offsets[u + 1]]
    assert np.all(np.diff(ts) >= 0)
