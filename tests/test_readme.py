"""The README's test command is exactly what CI runs."""

import os

from tests.conftest import REPO


def test_ci_runs_the_readme_test_command():
  with open(os.path.join(REPO, ".ci", "run")) as f:
    ci_command = [line for line in f if line.startswith("python3 -m venv")][0].strip()
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
  commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
  assert len(commands) == 2
  assert commands[1] == ci_command
  assert "semrec_jax.main --config=configs/demo.py" in commands[0]
