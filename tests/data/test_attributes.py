"""Platform normalisation and attribute extraction."""

import pytest

from semrec_jax.data import attributes


@pytest.mark.parametrize("title, platform", [
    ("Nintendo 3DS XL - Black [Old Model]", "3DS"),
    ("Tales of Vesperia: Definitive Edition - PlayStation 4", "PS4"),
    ("Halo 3 - Xbox 360", "Xbox 360"),
    ("Fable - Xbox", "Xbox"),
    ("Mario Kart DS", "DS"),
    ("Hitman 3 for Xbox One & Series X", "Xbox One"),
    ("Super Mario 64 (Nintendo 64)", "N64"),
    ("Dash 8-300 Professional Add-On", ""),
    ("Light Switch Cover", ""),  # a bare 'switch' is not a platform in a title
    ("Razer BlackWidow Mechanical Gaming Keyboard - Green Switch", ""),
    ("Kill Switch", ""),
    ("Sega Genesis II RF Switch", "Genesis"),
    ("GameCube Controller Adapter for Wii U, PC USB and Switch", "GameCube"),
    ("RF Switch/Switch Box", ""),  # only a safe platform before it makes a bare 'switch' one
    ("Windows, Switch, PS4", "PS4"),
])
def test_platform_from_title(title, platform):
  assert attributes.platform_from_title(title) == platform


def test_a_bare_switch_counts_only_in_a_list_of_platforms():
  assert attributes.title_platforms("Adapter for Wii U, PC USB and Switch, 4 Port") == [
      "Wii U", "PC", "Switch"]
  assert attributes.title_platforms("Adapter for Wii u, Pc, Switch.") == ["Wii U", "PC", "Switch"]
  assert attributes.title_platforms("Adapter for Wii U,  PC USB & Switch") == ["Wii U", "PC",
                                                                               "Switch"]
  assert attributes.title_platforms("NES/SNES/Sega Genesis RF Unit Automatic TV/Game Switch") == [
      "NES", "SNES", "Genesis"]
  assert attributes.title_platforms("Keyboard - Linear and Quiet Switch - PC") == ["PC"]


def test_canonical_platform_matches_the_games_names():
  assert attributes.canonical_platform("Nintendo DS|PC") == "DS"
  assert attributes.canonical_platform("Sony PSP") == "PSP"
  assert attributes.canonical_platform("PlayStation Vita") == "PS Vita"
  assert attributes.canonical_platform("Nintendo Switch") == "Switch"
  assert attributes.canonical_platform("") == ""


def test_from_amazon2023_prefers_details_then_categories():
  meta = {"title": "Some Game - PS3", "store": "Capcom",
          "categories": ["Video Games", "Legacy Systems", "PlayStation Systems", "PlayStation 2",
                         "Games"],
          "details": {"Platform": "Xbox One", "Manufacturer": "Capcom Co."}}
  assert attributes.from_amazon2023(meta) == {"platform": "Xbox One", "brand": "Capcom Co.",
                                              "product_type": "Game"}
  del meta["details"]
  assert attributes.from_amazon2023(meta) == {"platform": "PS2", "brand": "Capcom",
                                              "product_type": "Game"}
  meta["categories"] = ["Video Games", "Accessories"]
  assert attributes.from_amazon2023(meta)["platform"] == "PS3"  # last resort: the title
  assert attributes.from_amazon2023(meta)["product_type"] == "Accessory"
