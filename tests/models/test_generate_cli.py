"""The generation CLI on the real Gemma 3 270M weights."""

import os
import subprocess
import sys

from tests.conftest import REPO


def test_generate_prints_the_greedy_continuation():
  result = subprocess.run(
      [sys.executable, "-m", "semrec_jax.generate", "--model=gemma3_270m",
       "--weights=gguf:package", "--prompt=The best racing game for the PlayStation 4 is",
       "--max_new_tokens=6"],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})  # one CPU device
  assert result.returncode == 0, result.stderr[-2000:]
  # transformers' greedy continuation of this prompt (tests/fixtures/gemma3/golden.npz, prompt 0)
  assert result.stdout.strip().endswith(
      "The best racing game for the PlayStation 4 is the one that you can play")
  bad = subprocess.run([sys.executable, "-m", "semrec_jax.generate", "--prompt=x",
                        "--weights=onnx:model"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  assert bad.returncode != 0 and "--weights must start with gguf: or safetensors:" in bad.stderr
