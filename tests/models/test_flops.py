"""Model FLOPs: the hand count for `tiny`, and the matmul parameters it assumes are the model's."""

import numpy as np
from flax import nnx

from semrec_jax.models import configs, flops
from semrec_jax.models.decoder import Decoder


def test_tiny_train_step_flops_by_hand():
  c = configs.get("tiny", vocab_size=8192)
  per_layer = 256 * 4 * 64 * 2 + 256 * 1 * 64 * 2 + 3 * 256 * 1024  # q,o + k,v + GeGLU
  matmul_params = 4 * per_layer + 8192 * 256  # + the (tied) output head
  attention = 6 * 4 * 8 * 256 * 256 * 4 * 64
  assert flops.train_step_flops(c, 8, 256) == 6 * matmul_params * 8 * 256 + attention
  assert 6 * matmul_params * 8 * 256 + attention == 75_698_798_592


def test_matmul_parameters_are_the_models_matrices():
  for name in ("tiny", "gemma3_270m", "qwen3_0_6b", "qwen3_8b"):
    c = configs.get(name)
    model = nnx.eval_shape(lambda c=c: Decoder(c, nnx.Rngs(0)))
    # Every parameter but the norm scales (vectors, stacked over the scanned groups) is a matmul
    # weight, except an untied input table (a lookup; a tied table counts once, as the head).
    matrices = sum(int(np.prod(x.shape)) for path, x in nnx.to_flat_state(
        nnx.state(model, nnx.Param)) if path[-1] != "scale")
    batch, seq = 2, 64
    attention = 6 * c.num_layers * batch * seq * seq * c.num_heads * c.head_dim
    lookup = 0 if c.tie_embeddings else c.padded_vocab_size * c.embed_dim
    assert flops.train_step_flops(c, batch, seq) == 6 * (matrices - lookup) * batch * seq \
        + attention, name


def test_no_mfu_on_cpu():
  assert flops.peak_tflops_per_device() is None
  out = flops.utilisation(configs.get("tiny"), 8, 256, step_seconds=1.0)
  assert out["mfu"] is None and out["tflops_per_device"] > 0
