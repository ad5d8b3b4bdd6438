"""The fused head + cross-entropy kernel (Pallas, interpreted on the CPU) against the loss on full
logits, inside the LM step on a mesh, and what it refuses; the chunked XLA loss has no branch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from semrec_jax import defaults, parallel
from semrec_jax.lm import fused_loss, loss
from semrec_jax.lm import stage as lm_stage
from semrec_jax.lm import trainer as trainer_lib
from semrec_jax.stages import StageError
from tests.lm.test_trainer import batches, lm_config, model_for


def _case(dtype, positions=150, width=96, seed=0):
  rng = np.random.default_rng(seed)
  h = jnp.asarray(rng.normal(size=(positions, width)), dtype)
  tables = (jnp.asarray(rng.normal(size=(1000, width)) * 0.3, jnp.float32),
            jnp.asarray(rng.normal(size=(37, width)) * 0.3, jnp.float32))
  targets = jnp.asarray(rng.integers(0, 1037, positions), jnp.int32)
  return h, tables, targets


def _reference(h, tables, targets, weights):
  table = jnp.concatenate(tables).astype(h.dtype)
  logits = jnp.einsum("nd,vd->nv", h, table, preferred_element_type=jnp.float32)
  return jnp.sum(weights * optax.softmax_cross_entropy_with_integer_labels(logits, targets))


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
def test_kernel_equals_the_loss_on_full_logits(dtype, tolerance):
  """Two table parts (1,000 rows: eight 128-row tiles, the last moved back over 24 rows; 37 rows:
  a 32-row tile and a moved-back one), 150 positions in 32-row blocks (the last padded), the
  first 110 answers (blocks past them skipped), uneven weights; value and gradients."""
  h, tables, targets = _case(dtype)
  count = 110
  weights = jnp.where(jnp.arange(150) < count, jnp.linspace(0.5, 2.0, 150), 0.0)
  fused = lambda h, a, b: fused_loss.linear_cross_entropy(
      h, (a, b), targets, weights, count, block_rows=32, block_vocab=128, interpret=True)
  want, want_grads = jax.value_and_grad(
      lambda h, a, b: 3.0 * _reference(h, (a, b), targets, weights), argnums=(0, 1, 2))(h, *tables)
  got, got_grads = jax.value_and_grad(lambda *x: 3.0 * fused(*x), argnums=(0, 1, 2))(h, *tables)
  assert float(got) == pytest.approx(float(want), rel=tolerance / 10)
  for g, w in zip(got_grads, want_grads):
    g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, atol=tolerance * np.abs(w).max())
  assert float(jnp.abs(got_grads[0][count:]).max()) == 0  # skipped positions get no gradient


def test_width_slices_and_what_the_kernel_refuses():
  assert [fused_loss.width_slice(d) for d in (640, 1152, 96, 1000, 8)] == [128, 128, 32, 0, 0]
  assert fused_loss.supported(1152, [262144, 1024]) is None
  assert "width 1000" in fused_loss.supported(1000, [4096])
  assert "under 16" in fused_loss.supported(128, [4096, 8])
  assert loss.fused_kernel_refusal({"data": 8}, "gpu") is None
  assert "fsdp" in loss.fused_kernel_refusal({"data": 2, "fsdp": 4, "tensor": 1}, "gpu")
  assert "tensor" in loss.fused_kernel_refusal({"tensor": 2}, "cpu")
  assert "TPU" in loss.fused_kernel_refusal({"data": 4}, "tpu")
  with pytest.raises(ValueError, match="loss_kernel='nope'"):
    loss.decoder_loss(None, None, kernel="nope")


def test_the_step_with_the_kernel_on_eight_devices_equals_the_chunked_step_on_one(data,
                                                                                  tokenizer):
  """The LM step, every device compacting its own rows' answer positions into one kernel call,
  the devices' sums and the table's gradients added across the data axis."""
  batch = next(batches(data, tokenizer))
  results = []
  for kernel, mesh in (("pallas", parallel.make_mesh(parallel.mesh_config(data=8))),
                       ("xla", parallel.make_mesh(devices=jax.devices()[:1]))):
    trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(loss_kernel=kernel), "all",
                                    10, mesh)
    trainer.state, metrics = trainer.step(trainer.state, trainer.put(batch))
    results.append((float(metrics["loss"]), float(metrics["grad_norm"])))
  (got, got_norm), (want, want_norm) = results
  assert got == pytest.approx(want, rel=1e-5)
  assert got_norm == pytest.approx(want_norm, rel=1e-4)


def test_the_kernel_is_refused_on_a_mesh_that_shards_the_table(data, tokenizer):
  mesh = parallel.make_mesh(parallel.mesh_config(data=4, fsdp=2))
  trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(loss_kernel="pallas"), "all",
                                  10, mesh)
  with pytest.raises(ValueError, match="mesh axis fsdp shards it"):
    trainer.step(trainer.state, trainer.put(next(batches(data, tokenizer))))


def test_the_chunked_step_has_no_branch(data, tokenizer):
  """Chunks without answers are skipped by the loop's bound, not by a conditional per chunk."""
  trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(), "all", 10,
                                  parallel.make_mesh(devices=jax.devices()[:1]))
  batch = trainer.put(next(batches(data, tokenizer)))
  text = trainer.step.lower(trainer.state, batch).as_text()
  assert "stablehlo.while" in text and "stablehlo.case" not in text


@pytest.mark.parametrize("field,value", [("loss_kernel", "triton"), ("adam_mu_dtype", "float16")])
def test_the_lm_check_names_a_bad_loss_kernel_or_moment_dtype(field, value):
  c = defaults.base_config().lm
  lm_stage.check(c)
  c[field] = value
  with pytest.raises(StageError, match=rf"^config.lm.{field}='{value}': expected"):
    lm_stage.check(c)
