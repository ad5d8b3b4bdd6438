"""Default run: the bundled Games sample (2,000 items), sized for a 2-core CPU within about 10
minutes: prepare, embed, ids, the baselines, 900 LM steps, evaluation on 300 users and the report
(timings in docs/benchmarks.md)."""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.ids.steps = 150  # 2,000 items: batch 1,900, about 15 s of RQ-VAE training on 2 cores
  config.baselines.max_len = 20
  config.baselines.steps = 450       # 3 epochs of the sample's 19,080 users: ~45 s per SASRec
  config.baselines.eval_every = 150
  config.baselines.patience = 2
  config.baselines.val_users = 1000   # early stopping on a fixed subset (the test uses all)
  config.baselines.sid_model = "composed"  # validation NDCG@10 0.0748 vs 0.0595 for levels here
  # Short histories pack 2-3 examples per 128-token row: more examples per CPU second.
  config.lm.max_history = 5
  config.lm.stage_steps = (900,)
  config.lm.eval_every = 450
  config.lm.checkpoint_every = 450
  config.eval.max_users = 300
  config.eval.sampled_users = 30  # 1,001 candidates each: the slowest part of eval on a CPU
  config.eval.steer_users = 100
  config.eval.explain_users = 50
  config.eval.max_bundles = 50
  return config
