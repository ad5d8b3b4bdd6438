"""The Games benchmark (Amazon 2018 Video_Games 5-core); pass --config.data.path=FOLDER."""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.format = "games_tsv"
  config.data.path = ""  # --config.data.path=/path/to/amazon18_games
  # SASRec: histories of 20 items (LC-Rec's Games protocol; 96% of training sequences fit), two
  # blocks of width 64, batches of 256 users, early stopping on validation NDCG@10 every ~2.5
  # epochs (two evaluations without a better one).
  defaults.games_ids(config)
  # Four code levels (+ the collision level): the semantic-ID SASRec's validation NDCG@10 0.0496
  # against 0.0482 on three; the games_tiny LM chose three (docs/benchmarks.md, "Levels").
  config.ids.levels = 4
  config.baselines.max_len = 20
  config.baselines.batch_size = 256
  config.baselines.dropout = 0.3
  config.baselines.steps = 5_000
  config.baselines.eval_every = 500
  config.baselines.patience = 2
  # The semantic-ID SASRec at width 128 (its rows are 5 x 257 codes, not 16,859 items): on three
  # levels, validation NDCG@10 0.0482 vs 0.0474 at 64 (docs/benchmarks.md).
  config.baselines.sid_dim = 128
  return config
