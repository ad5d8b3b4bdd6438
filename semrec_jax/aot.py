r"""The fit check: AOT-compiles the LM train step for a TPU topology on any machine (libtpu, no
TPU) and says whether it fits each chip's HBM, before a pod is paid for.

  pip install 'semrec_jax[tpu]'   # libtpu==0.0.42.1, the version jax[tpu] 0.10.2 pins
  python -m semrec_jax.aot --config=configs/tpu_gemma3_1b.py --topology=v5e:4x4
  python -m semrec_jax.aot --config=configs/tpu_gemma3_1b.py --topology=v5e:4x4 --slices=2 \
      --config.mesh.dcn_data=2      # or --topology=2xv5e:4x4

Prints one line per fact (per-chip memory, FLOPs per step), then one JSON line; exits 1 with the
numbers when the step does not fit. The state is abstract (nnx.eval_shape): nothing of the
model's size is allocated here. The step compiled is the `all` stage's (every parameter trained,
full Adam state), the heavier one, with the config's batch, micro-batches, dtype and mesh.
"""

import json
import os
import re
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from semrec_jax import backend

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py with lm and mesh sections.")
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "TPU topology of one slice, e.g. v5e:4x4 (v5e-16), v5p:2x2x1 (v5p-8), "
    "v4:2x2x2, v6e:4x4; 'NxTOPOLOGY' (e.g. 2xv5e:4x4) for N slices.")
_SLICES = flags.DEFINE_integer("slices", 1, "Slices of that topology joined by the data-center "
                               "network (data parallelism across them: mesh.dcn_data).")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 1027, "Semantic-ID and control tokens added.")

GIB = 1024 ** 3
# HBM per chip (Cloud TPU docs: v4 32 GiB, v5e 16 GB, v5p 95 GB, v6e 32 GB), by JAX device kind.
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "TPU v6 lite": 32}
# v4 and v5p chips hold two TensorCores that JAX drives as one device ("megacore"), as on a pod.
_MEGACORE = ("v4", "v5p")


class FitError(Exception):
  """A user's mistake (topology, mesh, config): one line, no traceback."""


def parse_topology(name: str, slices: int = 1) -> tuple[str, int]:
  """('v5e:4x4', 2) from 'v5e:4x4' and --slices=2, or from '2xv5e:4x4'."""
  match = re.fullmatch(r"(\d+)x(v\w+:[\dx]+)", name or "")
  if match:
    if slices not in (1, int(match[1])):
      raise FitError(f"--topology={name} names {match[1]} slices but --slices={slices}")
    name, slices = match[2], int(match[1])
  if not re.fullmatch(r"v\w+:\d+(x\d+)*", name or ""):
    raise FitError(f"--topology={name!r}: expected GENERATION:SHAPE such as v5e:4x4 or v5p:2x2x1")
  if slices < 1:
    raise FitError(f"--slices={slices}: expected 1 or more")
  return name, slices


def topology_devices(name: str, slices: int):
  """The compile-only devices of `slices` slices of topology `name`."""
  if not backend.tpu_attached():  # no runtime starts here: spare libtpu its search for TPU hosts
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no chip to own: checks run at once
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  chip = "megacore" if name.split(":")[0] in _MEGACORE else "default"
  try:
    return topologies.get_topology_desc(platform="tpu", topology_name=name, num_slices=slices,
                                        chip_config_name=chip).devices
  except Exception as e:  # pylint: disable=broad-except  # libtpu missing or a bad name
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = f"{slices} x {name}" if slices > 1 else name
    raise FitError(f"topology {where}: {first}") from e


def compile_step(config, devices, new_tokens: int = 1027) -> dict:
  """Compiles the LM trainer's `all` step for `devices`: {"compiled" (None when the TPU
  compiler ran out of HBM), "oom" (its message), "mesh", "model_config", "params",
  "argument_bytes" (per chip, from the shardings)}."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from semrec_jax import parallel  # pylint: disable=import-outside-toplevel
  from semrec_jax.lm.input_pipeline import BATCH_KEYS  # pylint: disable=import-outside-toplevel
  from semrec_jax.lm.trainer import LMTrainer  # pylint: disable=import-outside-toplevel
  from semrec_jax.models import configs  # pylint: disable=import-outside-toplevel
  from semrec_jax.models.decoder import Decoder  # pylint: disable=import-outside-toplevel
  c = ml_collections.ConfigDict({**config.lm.to_dict(), "learning_rate": 1e-4})
  try:
    mesh = parallel.make_mesh(config.mesh, devices=devices)
    model_config = configs.get(c.model, num_new_tokens=new_tokens, attention=c.attention,
                               remat=c.remat)
  except ValueError as e:
    raise FitError(str(e)) from e
  if c.batch_size % parallel.data_parallel_size(mesh):
    raise FitError(f"lm.batch_size={c.batch_size} does not split over the mesh's "
                   f"{parallel.data_parallel_size(mesh)} data-parallel devices {dict(mesh.shape)}")
  model = nnx.eval_shape(lambda: Decoder(model_config, nnx.Rngs(0), dtype=jnp.dtype(c.dtype)))
  trainer = LMTrainer(model, c, "all", 1000, mesh)
  shape, sharding = (c.batch_size, c.seq_len), parallel.batch_sharding(mesh, 2)
  if c.grad_accum > 1:  # one step takes the update's micro-batches stacked
    shape, sharding = (c.grad_accum, *shape), parallel.batch_sharding(mesh, 3, batch_axis=1)
  batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding) for k in BATCH_KEYS}
  step = {"mesh": mesh, "model_config": model_config, "compiled": None, "oom": None,
          "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))),
          "argument_bytes": int(sum(
              np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
              for x in jax.tree.leaves((trainer.state, batch))))}
  try:
    step["compiled"] = trainer.step.lower(trainer.state, batch).compile()
  except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a program over HBM
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    step["oom"] = str(e).strip().splitlines()[0]
  return step


def _compiler_gib(message: str, label: str) -> float | None:
  """A size the TPU compiler's out-of-memory message gives after `label`, e.g. 'temporaries
  (28.52G)', in GiB (XLA prints binary units)."""
  found = re.search(label + r"\D*?([\d.]+)([KMGT])", message)
  if not found:
    return None
  return float(found[1]) * 1024 ** "KMGT".index(found[2]) / 1024 ** 2


def report(config, step: dict, topology: str, slices: int) -> dict:
  """The fit-check figures of a compiled step (memory per chip in GiB, FLOPs per step)."""
  from semrec_jax.models import flops  # pylint: disable=import-outside-toplevel
  c, mesh, compiled = config.lm, step["mesh"], step["compiled"]
  kind = next(iter(mesh.devices.flat)).device_kind
  hbm = HBM_GIB.get(kind)
  if compiled is not None:
    m = compiled.memory_analysis()
    gib = {"arguments": m.argument_size_in_bytes / GIB, "temporaries": m.temp_size_in_bytes / GIB,
           "output": m.output_size_in_bytes / GIB, "aliased": m.alias_size_in_bytes / GIB}
    total = gib["arguments"] + gib["output"] - gib["aliased"] + gib["temporaries"]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float(f"{cost['flops']:.4g}") if cost and "flops" in cost else None
  else:  # over HBM: the arguments from their shardings, the temporaries from the compiler
    temp = _compiler_gib(step["oom"], "temporaries")
    gib = {"arguments": step["argument_bytes"] / GIB, "temporaries": temp,
           "output": None, "aliased": None}
    total = gib["arguments"] + (temp or 0.0)  # the output reuses the donated state
    total = _compiler_gib(step["oom"], "Used") or total  # some messages give the whole sum
    xla_flops = None
  model_flops = flops.train_step_flops(step["model_config"], c.batch_size * c.grad_accum,
                                       c.seq_len)
  r = {"measure": "aot_fit", "model": c.model, "topology": topology, "slices": slices,
       "device": kind, "chips": mesh.devices.size, "mesh": dict(mesh.shape),
       "batch_size": c.batch_size, "grad_accum": c.grad_accum, "seq_len": c.seq_len,
       "dtype": c.dtype, "attention": c.attention, "remat": c.remat, "params": step["params"]}
  r.update({f"{k}_gib_per_chip": None if v is None else round(v, 3) for k, v in gib.items()})
  r.update({"total_gib_per_chip": round(total, 3), "hbm_gib_per_chip": hbm,
            "fits": False if step["oom"] else (None if hbm is None else total <= hbm),
            "compiler_oom": step["oom"], "model_flops_per_step": float(f"{model_flops:.4g}"),
            "xla_flops_per_chip": xla_flops})
  return r


def lines(r: dict) -> list[str]:
  """One line per fact, for people."""
  mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
  slices = f"{r['slices']} slices of " if r["slices"] > 1 else ""
  hbm = r["hbm_gib_per_chip"]
  verdict = {True: "fits", False: "DOES NOT FIT", None: f"HBM of {r['device']} unknown"}[r["fits"]]
  of_hbm = f" of {hbm} GiB HBM ({r['total_gib_per_chip'] / hbm:.0%})" if hbm else ""
  gib = lambda k: "?" if r[k] is None else f"{r[k]:.2f}"
  out = [
      f"model: {r['model']}, {r['params']:,} parameters, the `all` stage (full Adam state)",
      f"topology: {slices}{r['topology']}, {r['chips']} chips of {r['device']}, mesh {mesh}",
      f"batch: {r['batch_size']} x {r['seq_len']} tokens per micro-batch, {r['grad_accum']} "
      f"micro-batch(es) per step, {r['dtype']}, attention {r['attention']}, remat {r['remat']}",
      f"arguments: {gib('arguments_gib_per_chip')} GiB per chip",
      f"temporaries: {gib('temporaries_gib_per_chip')} GiB per chip",
  ]
  if r["compiler_oom"]:
    out.append(f"compiler: {r['compiler_oom']}")
  else:
    out.append(f"output: {gib('output_gib_per_chip')} GiB per chip "
               f"({gib('aliased_gib_per_chip')} of it in the donated arguments' buffers)")
  out += [
      f"total: {r['total_gib_per_chip']:.2f} GiB per chip{of_hbm}: {verdict}",
      f"model flops: {r['model_flops_per_step']:.4g} per step, "
      f"{r['model_flops_per_step'] / r['chips']:.4g} per chip (6 x params x tokens + attention)",
  ]
  if r["xla_flops_per_chip"] is not None:
    out.append(f"xla flops: {r['xla_flops_per_chip']:.4g} per chip (XLA's cost analysis of the "
               "compiled program: each loop body, a scanned layer or micro-batch, counted once)")
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  backend.choose()
  start = time.perf_counter()
  try:
    topology, slices = parse_topology(_TOPOLOGY.value, _SLICES.value)
    step = compile_step(_CONFIG.value, topology_devices(topology, slices), _NEW_TOKENS.value)
  except FitError as e:
    sys.exit(f"error: {e}")
  r = report(_CONFIG.value, step, topology, slices)
  r["compile_s"] = round(time.perf_counter() - start, 1)
  print("\n".join(lines(r)), flush=True)
  print(json.dumps(r), flush=True)
  if r["fits"] is False:
    temp = r["temporaries_gib_per_chip"]
    sys.exit(f"does not fit: {r['total_gib_per_chip']:.2f} GiB per chip > {r['hbm_gib_per_chip']}"
             f" GiB HBM of {r['device']} ({r['arguments_gib_per_chip']:.2f} arguments + "
             f"{'?' if temp is None else f'{temp:.2f}'} temporaries)")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main)
