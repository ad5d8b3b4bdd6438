"""semrec_jax: a pure-JAX stack for LLM-recommender hybrids with semantic IDs.

`semrec_jax.Recommender.from_workdir(W)` gives the Python API of a trained run (semrec_jax/chat/).
"""

import glob
import importlib.util
import os
import sys

__version__ = "0.1.0"


def _tpu_attached() -> bool:
  """Whether a TPU chip (PCI vendor 0x1ae0, Google) is attached, as JAX itself detects one."""
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == "0x1ae0":
          return True
    except OSError:
      pass
  return False


def _skip_absent_tpu():
  """With libtpu installed (the `tpu` extra, for `semrec_jax.aot`) but no TPU attached, JAX still
  tries its TPU backend at start-up, and libtpu prints an initialisation error before JAX falls
  back to the CPU. On such a machine with no GPU either, the CPU is the only backend: ask for it.
  A TPU VM, a GPU host, JAX_PLATFORMS or JAX_FORCE_TPU_INIT set by the user: left alone."""
  libtpu = os.environ.get("TPU_LIBRARY_PATH") or importlib.util.find_spec("libtpu")
  gpu = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
  if ("JAX_PLATFORMS" in os.environ or "JAX_FORCE_TPU_INIT" in os.environ or not libtpu
      or _tpu_attached() or any(os.path.exists(p) for p in gpu)):
    return
  if "jax" in sys.modules:  # imported before us: its config has read the environment already
    jax = sys.modules["jax"]
    jax.config.update("jax_platforms", jax.config.jax_platforms or "cpu")
  else:
    os.environ["JAX_PLATFORMS"] = "cpu"


_skip_absent_tpu()


def __getattr__(name):
  if name == "Recommender":  # imported on first use: `import semrec_jax` stays light
    from semrec_jax.chat import Recommender
    return Recommender
  raise AttributeError(f"module 'semrec_jax' has no attribute {name!r}")
