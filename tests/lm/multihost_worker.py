"""One JAX process of the 2-process LM training test (tests/lm/test_multihost.py).

Each process owns 2 CPU devices; together they form a mesh per layout (`--layouts`, trained one
after the other in the same processes: multihost_common.mesh), read their share of the task
mixture, and run LMTrainer steps with Orbax checkpoints in --ckpt_dir/<layout>. Process 0 can
SIGTERM itself at a step of the first layout (`--kill_at`): both processes must save and stop
together. Writes the final step, a checksum of the parameters and held-out losses (each process
evaluating its share of the examples) to --out_dir/<layout>/process_<i>.json; process 0 logs the
loss per step to --out_dir/<layout>/metrics.jsonl.
"""

import json
import os
import signal
import sys

import jax

FLAGS = dict(arg.lstrip("-").split("=", 1) for arg in sys.argv[1:])


def main():
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  process_id = int(FLAGS["process_id"])
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{FLAGS['port']}", num_processes=2,
                             process_id=process_id)
  # Imported after initialize: nothing may touch the backend before it.
  from tests.lm import multihost_common as common  # pylint: disable=import-outside-toplevel
  from semrec_jax.lm import trainer as trainer_lib  # pylint: disable=import-outside-toplevel

  assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
  from semrec_jax import parallel  # pylint: disable=import-outside-toplevel
  kill_at = int(FLAGS.get("kill_at", 0))
  for n, layout in enumerate(FLAGS["layouts"].split(",")):
    mesh = common.mesh(jax.devices(), layout)
    trainer = common.trainer(FLAGS["tokenizer"], mesh)
    shard = parallel.input_shard(mesh)
    batches = common.batches(FLAGS["data_dir"], FLAGS["sids"], FLAGS["tokenizer"], shard)
    on_step = (lambda s: os.kill(os.getpid(), signal.SIGTERM)
               if s == kill_at and process_id == 0 and n == 0 else None)
    out_dir = os.path.join(FLAGS["out_dir"], layout)
    os.makedirs(out_dir, exist_ok=True)
    result = trainer_lib.train(trainer, batches, common.STEPS,
                               os.path.join(FLAGS["ckpt_dir"], layout), common.CONFIG, {},
                               os.path.join(out_dir, "metrics.jsonl"), on_step=on_step)
    heldout, examples = common.held_out_losses(trainer, FLAGS["data_dir"], FLAGS["sids"],
                                               FLAGS["tokenizer"])
    with open(os.path.join(out_dir, f"process_{process_id}.json"), "w") as f:
      json.dump({"step": result["step"], "preempted": result["preempted"], "shard": shard,
                 "checksum": common.checksum(trainer), "heldout": heldout,
                 "examples": examples}, f)
    if result["preempted"]:
      break


if __name__ == "__main__":
  main()
