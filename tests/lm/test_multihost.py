"""Two JAX processes (2 CPU devices each, gloo collectives) train like one process fed the same
global batches, survive a SIGTERM delivered to only one of them, and evaluate a checkpoint as one
process does."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import demo
from semrec_jax.eval import stage as eval_stage
from tests.conftest import FAST_COMPILE, SMALL_EVAL
from tests.lm import multihost_common as common

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _processes(command: list[str], **flags) -> list[tuple[int, str]]:
  """Runs `python command --flag=value... --process_id=i` for i in 0, 1 (2 CPU devices each,
  coordinator on a free local port); returns [(exit code, output)]."""
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
         "JAX_PLATFORMS": "cpu"}
  args = [f"--{k}={v}" for k, v in flags.items()]
  procs = [subprocess.Popen([sys.executable, *command, *args, f"--process_id={i}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  return [(p.returncode, out) for p in procs for out, _ in [p.communicate(timeout=600)]]


def _launch(paths: dict, out_dir, layouts: str, kill_at: int = 0) -> dict[str, list[dict]]:
  """Both processes' results per layout they trained (multihost_worker.py)."""
  runs = _processes(["-m", "tests.lm.multihost_worker"], **paths, port=_free_port(),
                    out_dir=out_dir, layouts=layouts, kill_at=kill_at)
  for i, (code, output) in enumerate(runs):
    assert code == 0, f"process {i} failed:\n{output[-4000:]}"
  results = {}
  for layout in layouts.split(","):
    results[layout] = []
    for i in range(2):
      with open(os.path.join(out_dir, layout, f"process_{i}.json")) as f:
        results[layout].append(json.load(f))
  return results


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, demo_workdir, demo_ids, tokenizer):
  """Two launches of two processes. The first trains the fsdp layout and process 0 alone gets
  SIGTERM after step 1; the second resumes and finishes it, then trains the tensor_across layout
  from scratch in the same processes (one launch less than a launch per check)."""
  tmp_path = tmp_path_factory.mktemp("two_processes")
  paths = {"data_dir": os.path.join(demo_workdir, "data"),
           "sids": os.path.join(demo_ids, "semantic_ids.tsv"),
           "tokenizer": str(tmp_path / "tokenizer.model"), "ckpt_dir": str(tmp_path / "ckpt")}
  tokenizer.save(paths["tokenizer"])
  first = _launch(paths, str(tmp_path), "fsdp", kill_at=1)["fsdp"]
  second = _launch(paths, str(tmp_path), "fsdp,tensor_across")
  return paths, tmp_path, first, second


@pytest.mark.slow
def test_two_processes_match_one_and_resume_together(two_processes):
  paths, tmp_path, first, second = two_processes
  second, ckpt_dir = second["fsdp"], os.path.join(paths["ckpt_dir"], "fsdp")
  # Process 0 alone gets SIGTERM after step 1. JAX's preemption service tells every process,
  # and Orbax's sync point makes them stop after the same later step (the step counters agree,
  # no collective per step), both saving it; a re-launch finishes.
  stopped = first[0]["step"]
  assert [(r["step"], r["preempted"]) for r in first] == [(stopped, True)] * 2
  assert 1 < stopped < common.STEPS
  assert [(r["step"], r["preempted"]) for r in second] == [(4, False), (4, False)]
  assert second[0]["checksum"] == second[1]["checksum"]
  assert sorted(os.listdir(ckpt_dir)) == sorted({"2", str(stopped), "4"})
  for step in (str(stopped), "4"):  # one iterator position per process
    assert sorted(os.listdir(os.path.join(ckpt_dir, step, "data_iterator"))) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  with open(tmp_path / "fsdp" / "metrics.jsonl") as f:
    logged = [(r["step"], r["loss"]) for r in map(json.loads, f)]
  assert [s for s, _ in logged] == [1, 2, 3, 4]  # process 0 alone writes the log

  # Reference: one process, 4 devices, the two processes' rows concatenated in process order.
  trainer = common.trainer(paths["tokenizer"], common.mesh(jax.devices()[:4]))
  shards = [common.batches(paths["data_dir"], paths["sids"], paths["tokenizer"], shard=(i, 2))
            for i in range(2)]
  losses = []
  for _ in range(common.STEPS):
    parts = [next(it) for it in shards]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    trainer.state, metrics = trainer.step(trainer.state, trainer.put(batch))
    losses.append(float(metrics["loss"]))
  np.testing.assert_allclose([loss for _, loss in logged], losses, rtol=1e-4)
  assert second[0]["checksum"] == pytest.approx(common.checksum(trainer), rel=1e-5)
  # Held-out loss split over two processes (odd counts, uneven batches) equals one process's.
  assert second[0]["heldout"] == second[1]["heldout"]
  reference, examples = common.held_out_losses(trainer, paths["data_dir"], paths["sids"],
                                               paths["tokenizer"])
  assert examples == {task: 25 for task in common.EVAL_TASKS}
  for task in common.EVAL_TASKS:  # 13 + 12: each example evaluated once, by one process
    assert (second[0]["examples"][task], second[1]["examples"][task]) == (13, 12)
  for task, loss in reference.items():
    assert second[0]["heldout"][task] == pytest.approx(loss, rel=1e-4), task


@pytest.mark.slow
def test_a_tensor_axis_across_processes_gets_the_same_rows_on_both(two_processes):
  """data=2 x tensor=2 with each tensor pair spanning both processes: each process holds every
  row, so both read the whole batch (input shard 0 of 1), and training equals one process's on
  the same mesh layout. (Reading rows by process index would feed the two halves of a tensor
  pair different rows without any error.)"""
  paths, tmp_path, _, second = two_processes
  runs = second["tensor_across"]
  assert [r["shard"] for r in runs] == [[0, 1], [0, 1]]
  assert runs[0]["checksum"] == runs[1]["checksum"]
  with open(tmp_path / "tensor_across" / "metrics.jsonl") as f:
    logged = [r["loss"] for r in map(json.loads, f)]
  mesh = common.mesh(jax.devices()[:4], "tensor_across")
  trainer = common.trainer(paths["tokenizer"], mesh)
  batches = common.batches(paths["data_dir"], paths["sids"], paths["tokenizer"])
  losses = []
  for _ in range(common.STEPS):
    trainer.state, metrics = trainer.step(trainer.state, trainer.put(next(batches)))
    losses.append(float(metrics["loss"]))
  np.testing.assert_allclose(logged, losses, rtol=1e-4)
  assert runs[0]["checksum"] == pytest.approx(common.checksum(trainer), rel=1e-5)


@pytest.mark.slow
def test_main_trains_and_evaluates_on_two_processes_as_one_would(tmp_path, main_workdir):
  """One launch: both processes train the `lm` stage, then evaluate its checkpoint together;
  the metrics equal this one process's (8 devices) on the same checkpoint, restored on another
  mesh, and only process 0 reports."""
  workdir = main_workdir
  main = ["-m", "semrec_jax.main", "--config=configs/demo.py", f"--workdir={workdir}",
          "--num_processes=2"]
  lm = {"config.lm.stage_steps": "(4,)", "config.lm.eval_every": 2,
        "config.lm.eval_examples": 8, "config.lm.checkpoint_every": 2,
        "config.lm.log_every": 1}
  runs = _processes(main + ["--stages=lm,prefer,eval"], coordinator_address=f"127.0.0.1:{_free_port()}",
                    **lm, **{f"config.eval.{k}": v for k, v in SMALL_EVAL.items()})
  for i, (code, output) in enumerate(runs):
    assert code == 0, f"process {i} failed:\n{output[-4000:]}"
  out = workdir / "lm"
  assert not (workdir / ".lm.incomplete").exists()
  assert {"fingerprint.json", "info.json", "tokenizer.model"} <= set(os.listdir(out))
  with open(out / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # once, by process 0
  assert [r["step"] for r in records if "loss" not in r] == [2, 4]
  assert sorted(os.listdir(out / "checkpoints" / "all" / "4" / "data_iterator")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]

  assert "eval: done" in runs[0][1] and "eval: done" not in runs[1][1]  # one voice
  with open(workdir / "eval" / "metrics.json") as f:
    together = json.load(f)
  assert together["invalid_rate"] == 0.0
  config = demo.get_config()
  config.eval.update(SMALL_EVAL)
  alone = eval_stage.evaluate(config, str(workdir), str(tmp_path / "eval_alone"))
  assert set(alone) == set(together)
  for key, value in alone.items():
    assert together[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float)
                             else value), key

  # Single-process stages say so instead of racing each other.
  runs = _processes(main + ["--stages=prepare", f"--workdir={tmp_path / 'fresh'}"],
                    coordinator_address=f"127.0.0.1:{_free_port()}")
  for code, output in runs:
    assert code != 0 and "stage 'prepare' runs in one process" in output
