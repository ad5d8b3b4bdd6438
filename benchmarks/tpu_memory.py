r"""Per-chip memory of the LM step on a TPU topology, AOT-compiled on this CPU: the fit check
`python -m semrec_jax.aot` (semrec_jax/aot.py), under its old name so recorded commands still run.

  python benchmarks/tpu_memory.py --config=configs/tpu_gemma3_1b.py --topology=v5e:4x4
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/

from absl import app, flags  # noqa: E402

from semrec_jax import aot, backend  # noqa: E402

if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "topology"])
  backend.choose()
  app.run(aot.main)
