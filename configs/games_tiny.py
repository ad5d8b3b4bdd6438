"""A `tiny` decoder trained from scratch on the full Games data (pass --config.data.path)."""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.path = ""  # --config.data.path=/path/to/amazon18_games
  config.ids.steps = defaults.GAMES_IDS_STEPS
  config.lm.vocab_size = 8192
  config.lm.seq_len = 256
  config.lm.batch_size = 16
  config.lm.stage_steps = (3000,)
  config.lm.checkpoint_every = 500
  config.lm.log_every = 50
  return config
