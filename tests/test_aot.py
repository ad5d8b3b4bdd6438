"""The fit check (`python -m semrec_jax.aot`): TPU memory numbers, exit codes, one-line errors,
and that an installed libtpu leaves ordinary CPU runs quiet. Compiling needs libtpu (the `tpu`
extra); without it those tests are skipped."""

import concurrent.futures
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from semrec_jax import aot, backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None and not os.environ.get("TPU_LIBRARY_PATH"),
    reason="libtpu is not installed (pip install '.[tpu]'): the fit check compiles for TPU "
    "topologies with it")


def _run_aot(args):
  """(exit code, stdout lines, stderr) of the command, run from the repository root."""
  run = subprocess.run([sys.executable, "-m", "semrec_jax.aot", "--config=configs/demo.py", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  return run.returncode, run.stdout.splitlines(), run.stderr


COMMANDS = {  # every fit check this module makes, run at once (each is one single-threaded
    # libtpu compile or an early exit)
    "fits": ("--topology=v5e:2x2",),
    "two_slices": ("--topology=2xv5e:2x2", "--config.mesh.dcn_data=2"),
    # tiny at 1024 x 2048 tokens per step: 34 GiB per 16 GiB chip (XLA rematerialises to fit
    # 512 x 2048 into 15.2 GiB since the layers are unrolled).
    "over_hbm": ("--topology=v5e:2x2", "--config.lm.batch_size=1024", "--config.lm.seq_len=2048"),
    "bad_name": ("--topology=v9:2x2",),
    "slices_flag": ("--topology=v5e:2x2", "--slices=2"),
    "dcn_fsdp": ("--topology=v5e:2x2", "--config.mesh.dcn_fsdp=2"),
}


@pytest.fixture(scope="module")
def ran():
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    return dict(zip(COMMANDS, pool.map(_run_aot, COMMANDS.values())))


def test_parse_topology_takes_slices_from_the_name_or_the_flag():
  assert aot.parse_topology("v5e:4x4") == ("v5e:4x4", 1)
  assert aot.parse_topology("v5e:4x4", 2) == ("v5e:4x4", 2)
  assert aot.parse_topology("2xv5e:4x4") == ("v5e:4x4", 2)
  assert aot.parse_topology("2xv5p:2x2x1", 2) == ("v5p:2x2x1", 2)
  for bad, slices in (("v5e", 1), ("4x4", 1), ("2xv5e:4x4", 3), ("v5e:4x4", 0)):
    with pytest.raises(aot.FitError):
      aot.parse_topology(bad, slices)


@needs_libtpu
@pytest.mark.slow
def test_tiny_fits_a_v5e_2x2_and_says_so_per_chip(ran):
  code, out, err = ran["fits"]
  assert code == 0, err
  r = json.loads(out[-1])
  assert (r["device"], r["chips"], r["mesh"]) == ("TPU v5 lite", 4, {"data": 4, "fsdp": 1,
                                                                     "tensor": 1})
  # Replicated float32 parameters + Adam's two moments, per chip, plus the batch.
  assert r["arguments_gib_per_chip"] == pytest.approx(r["params"] * 12 / aot.GIB, rel=0.02)
  assert r["total_gib_per_chip"] == pytest.approx(
      r["arguments_gib_per_chip"] + r["temporaries_gib_per_chip"] + r["output_gib_per_chip"]
      - r["aliased_gib_per_chip"], abs=0.002)
  assert 0 < r["temporaries_gib_per_chip"] < 1 and r["fits"] is True
  assert r["hbm_gib_per_chip"] == 16 and r["model_flops_per_step"] > 0
  assert f"arguments: {r['arguments_gib_per_chip']:.2f} GiB per chip" in out
  assert f"temporaries: {r['temporaries_gib_per_chip']:.2f} GiB per chip" in out
  assert any(re.fullmatch(r"total: [\d.]+ GiB per chip of 16 GiB HBM \(\d+%\): fits", line)
             for line in out)
  assert "TPU_WORKER_HOSTNAMES" not in err  # libtpu's host search is spared


@needs_libtpu
@pytest.mark.slow
def test_two_slices_compile_with_data_parallelism_across_them(ran):
  code, out, err = ran["two_slices"]
  assert code == 0, err
  r = json.loads(out[-1])
  assert (r["slices"], r["chips"], r["mesh"]) == (2, 8, {"data": 8, "fsdp": 1, "tensor": 1})
  assert "topology: 2 slices of v5e:2x2, 8 chips of TPU v5 lite, mesh data=8 fsdp=1 tensor=1" in out


@needs_libtpu
@pytest.mark.slow
def test_a_step_over_hbm_exits_non_zero_with_the_numbers(ran):
  code, out, err = ran["over_hbm"]
  assert code == 1
  r = json.loads(out[-1])
  assert r["fits"] is False and r["temporaries_gib_per_chip"] > 16
  assert r["total_gib_per_chip"] == pytest.approx(
      r["arguments_gib_per_chip"] + r["temporaries_gib_per_chip"], abs=0.002)
  last = err.strip().splitlines()[-1]
  assert re.fullmatch(r"does not fit: [\d.]+ GiB per chip > 16 GiB HBM of TPU v5 lite \("
                      r"[\d.]+ arguments \+ [\d.]+ temporaries\)", last), last
  assert f"{r['total_gib_per_chip']:.2f} GiB per chip" in last


@needs_libtpu
@pytest.mark.parametrize("name, message", [
    ("bad_name", "error: topology v9:2x2: INVALID_ARGUMENT: Invalid TPU external name"),
    ("slices_flag",
     "error: the devices span 2 slice(s) but mesh.dcn_data=1; set --config.mesh.dcn_data=2"),
    ("dcn_fsdp",
     "error: mesh.dcn_fsdp=2, mesh.dcn_tensor=1: only data parallelism runs across slices"),
])
def test_a_users_mistake_is_one_line_without_a_traceback(ran, name, message):
  code, out, err = ran[name]
  assert code == 1 and not out
  assert err.strip().startswith(message) and len(err.strip().splitlines()) == 1, err


@needs_libtpu
@pytest.mark.skipif(backend.tpu_attached(), reason="a TPU is attached: JAX should initialise it")
def test_installed_libtpu_leaves_a_cpu_run_quiet():
  """What every command does first (console.parse_flags)."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  quiet = "import jax; from semrec_jax import backend; backend.choose(); print(jax.devices())"
  run = subprocess.run([sys.executable, "-c", quiet],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True)
  assert "CpuDevice" in run.stdout
  assert "TPU_WORKER_HOSTNAMES" not in run.stderr and "TPU" not in run.stderr, run.stderr
