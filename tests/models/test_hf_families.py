"""Qwen3 and Llama from Hugging Face safetensors: random tiny checkpoints against `transformers`."""

import os

import jax
import numpy as np
import pytest

from semrec_jax import parallel
from semrec_jax.models import configs, params
from tests.conftest import FIXTURES


@pytest.mark.parametrize("name, family", [("qwen3_tiny", "qwen3"), ("llama_tiny", "llama")])
def test_logits_match_transformers(name, family):
  folder = os.path.join(FIXTURES, name)
  config = configs.from_hf(os.path.join(folder, "config.json"), num_new_tokens=3)
  assert config.family == family and not config.tie_embeddings
  assert config.qk_norm == (family == "qwen3")
  mesh = parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2))
  model = params.load_safetensors(config, folder, mesh=mesh)
  golden = np.load(os.path.join(folder, "golden.npz"))
  logits = np.asarray(jax.jit(lambda t: model(t))(golden["tokens"]))
  assert logits.shape == (2, 24, 640)
  np.testing.assert_allclose(logits[..., :512], golden["logits"], atol=1e-3, rtol=1e-4)


def test_checkpoint_errors_name_the_problem(tmp_path):
  folder = os.path.join(FIXTURES, "qwen3_tiny")
  config = configs.from_hf(os.path.join(folder, "config.json"))
  with pytest.raises(ValueError, match="has shape .* the model expects"):
    params.load_safetensors(config.replace(mlp_dim=96), folder)
  with pytest.raises(ValueError, match="maps to 'layers/1/.*', which this qwen3 config has no"):
    params.load_safetensors(config.replace(num_layers=1), folder)
  with pytest.raises(ValueError, match="missing tensor"):
    params.load_safetensors(config.replace(num_layers=3), folder)
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    params.load_safetensors(config, str(tmp_path))
  (tmp_path / "config.json").write_text('{"model_type": "mamba"}')
  with pytest.raises(ValueError, match="unsupported model_type 'mamba'"):
    configs.from_hf(str(tmp_path / "config.json"))
