"""The JAX backend the commands ask for, chosen by them (console.parse_flags) and never
on import: a library that sets JAX_PLATFORMS on import overrides its user's choice.

With libtpu installed (the `tpu` extra, for `semrec_jax.aot`) but no TPU attached, JAX still tries
its TPU backend at start-up and libtpu prints an initialisation error before JAX falls back to the
CPU. On such a machine with no GPU either, the CPU is the only backend, so the commands ask for it.
A TPU VM, a GPU host, or JAX_PLATFORMS / JAX_FORCE_TPU_INIT set by the user are left alone.

On a GPU host the commands add the XLA flags a training step wants there (`GPU_XLA_FLAGS`) to
XLA_FLAGS, each unless the user's XLA_FLAGS already names it.
"""

import glob
import importlib.util
import os
import sys

_GPU_DEVICES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
# The latency-hiding scheduler overlaps FSDP's all-gathers and reduce-scatters with the layers'
# products (as MaxText sets it on GPUs).
GPU_XLA_FLAGS = ("--xla_gpu_enable_latency_hiding_scheduler=true",)


def with_gpu_flags(xla_flags: str) -> str:
  """XLA_FLAGS plus each of GPU_XLA_FLAGS whose name it does not already set."""
  given = {f.split("=")[0] for f in xla_flags.split()}
  return " ".join([*xla_flags.split(), *(f for f in GPU_XLA_FLAGS if f.split("=")[0] not in given)])


def tpu_attached() -> bool:
  """Whether a TPU chip (PCI vendor 0x1ae0, Google) is attached, as JAX itself detects one."""
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == "0x1ae0":
          return True
    except OSError:
      pass
  return False


def choose() -> None:
  """Asks for the CPU where libtpu is installed but neither a TPU nor a GPU is attached; must run
  before JAX starts a backend (importing jax is fine). On a GPU host, adds GPU_XLA_FLAGS."""
  gpu = any(os.path.exists(p) for p in _GPU_DEVICES)
  if gpu:
    os.environ["XLA_FLAGS"] = with_gpu_flags(os.environ.get("XLA_FLAGS", ""))
  libtpu = os.environ.get("TPU_LIBRARY_PATH") or importlib.util.find_spec("libtpu")
  if ("JAX_PLATFORMS" in os.environ or "JAX_FORCE_TPU_INIT" in os.environ or not libtpu
      or tpu_attached() or gpu):
    return
  if "jax" in sys.modules:  # its config has read the environment already
    jax = sys.modules["jax"]
    jax.config.update("jax_platforms", jax.config.jax_platforms or "cpu")
  else:
    os.environ["JAX_PLATFORMS"] = "cpu"
