"""Amazon Reviews 2023 official files of one category (meta + reviews or benchmark CSVs).

  --config.data.path=FOLDER --config.data.category=Video_Games
"""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.format = "amazon2023"
  config.data.path = ""
  config.data.category = "Video_Games"
  config.data.interactions = "auto"
  return config
