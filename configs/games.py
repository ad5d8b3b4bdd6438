"""The Games benchmark (Amazon 2018 Video_Games 5-core); pass --config.data.path=FOLDER."""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.format = "games_tsv"
  config.data.path = ""  # e.g. ../shared/data/amazon18_games
  return config
