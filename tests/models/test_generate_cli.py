"""The generation command's own part: flags in, one line out, one-line errors. The continuation it
prints is checked on the real Gemma 3 270M in test_gemma3.py (generate.continuation), where the
model is loaded once for the module."""

import subprocess
import sys

from tests.conftest import REPO


def test_bad_weights_spec_is_one_line():
  bad = subprocess.run([sys.executable, "-m", "semrec_jax.generate", "--prompt=x",
                        "--weights=onnx:model"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  assert bad.returncode != 0 and "--weights must start with gguf: or safetensors:" in bad.stderr
  assert "Traceback" not in bad.stderr


def test_a_missing_weights_file_is_one_line(tmp_path):
  run = subprocess.run([sys.executable, "-m", "semrec_jax.generate", "--prompt=x",
                        f"--weights=gguf:{tmp_path / 'missing.gguf'}"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert run.stderr.strip().splitlines()[-1].startswith("error: ") and "not found" in run.stderr
