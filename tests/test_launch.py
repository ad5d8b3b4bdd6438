"""The launch scripts' dry runs print exactly the commands they would run, the README walkthroughs
are that output, and the SLURM path starts a JAX job. No network, gcloud or SLURM needed: a fake
gcloud / sbatch on PATH records any call, and there must be none."""

import os
import re
import shlex
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

TPU_VM = os.path.join(REPO, "launch", "tpu_vm.sh")
SLURM = os.path.join(REPO, "launch", "slurm.sh")
TPU_ENV = {"TPU": "my-v5e", "ZONE": "us-west4-a", "PROJECT": "my-project"}
QR = "gcloud compute tpus queued-resources"
WHERE = "--zone=us-west4-a --project=my-project"


@pytest.fixture
def fake_bin(tmp_path):
  """A folder of commands that must never run in a dry run: each records its call."""
  folder = tmp_path / "bin"
  folder.mkdir()
  for name in ("gcloud", "sbatch", "srun", "scontrol"):
    path = folder / name
    path.write_text(f"#!/bin/sh\necho {name} \"$@\" >> {tmp_path}/called\nexit 1\n")
    path.chmod(0o755)
  return folder


def launch(script, *args, env=None, fake_bin=None, cwd=None):
  """Runs a launch script in a clean environment (plus `env`); returns the CompletedProcess."""
  path = f"{fake_bin}:/usr/bin:/bin" if fake_bin else "/usr/bin:/bin"
  full_env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
  result = subprocess.run(["bash", script, *args], env=full_env, capture_output=True, text=True,
                          cwd=cwd or "/", check=False)
  if fake_bin:
    assert not (fake_bin.parent / "called").exists(), (fake_bin.parent / "called").read_text()
  return result


def dry(script, *args, fake_bin, **env):
  result = launch(script, "--dry_run", *args, env=env, fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""
  return result.stdout.splitlines()


def tpu(*args, fake_bin, **env):
  return dry(TPU_VM, *args, fake_bin=fake_bin, **{**TPU_ENV, **env})


def remote_command(line: str) -> str:
  """The --command a printed gcloud ssh line sends to the workers, unquoted as a shell would."""
  [command] = [w for w in shlex.split(line) if w.startswith("--command=")]
  return command[len("--command="):]


@pytest.mark.parametrize("accelerator,runtime", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v4-32", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v5p-8", "v2-alpha-tpuv5"),
    ("v6e-16", "v2-alpha-tpuv6e")])
def test_create_picks_the_runtime_version_from_the_accelerator_type(fake_bin, accelerator,
                                                                      runtime):
  assert tpu("create", accelerator, fake_bin=fake_bin) == [
      f"{QR} create my-v5e {WHERE} --node-id=my-v5e --accelerator-type={accelerator} "
      f"--runtime-version={runtime}"]


def test_create_spot_reserved_multislice_and_runtime_override(fake_bin):
  assert tpu("create", "v5litepod-16", "--spot", fake_bin=fake_bin) == [
      f"{QR} create my-v5e {WHERE} --node-id=my-v5e --accelerator-type=v5litepod-16 "
      "--runtime-version=v2-alpha-tpuv5-lite --spot"]
  assert tpu("create", "v5p-8", "--reserved", fake_bin=fake_bin) == [
      f"{QR} create my-v5e {WHERE} --node-id=my-v5e --accelerator-type=v5p-8 "
      "--runtime-version=v2-alpha-tpuv5 --reserved"]
  assert tpu("create", "v6e-16", "--slices=4", "--spot", fake_bin=fake_bin) == [
      f"{QR} create my-v5e {WHERE} --node-count=4 --node-prefix=my-v5e "
      "--accelerator-type=v6e-16 --runtime-version=v2-alpha-tpuv6e --spot"]
  # --slices=1 is one plain node; RUNTIME wins over the table, also for types it does not know.
  assert tpu("create", "v7x-8", "--slices=1", fake_bin=fake_bin, RUNTIME="v2-alpha-tpu7x") == [
      f"{QR} create my-v5e {WHERE} --node-id=my-v5e --accelerator-type=v7x-8 "
      "--runtime-version=v2-alpha-tpu7x"]


def test_status_list_delete(fake_bin):
  assert tpu("status", fake_bin=fake_bin) == [f"{QR} describe my-v5e {WHERE}"]
  assert tpu("list", fake_bin=fake_bin) == [f"{QR} list {WHERE}"]
  # list needs no TPU name
  assert dry(TPU_VM, "list", fake_bin=fake_bin, ZONE="us-west4-a", PROJECT="my-project") == [
      f"{QR} list {WHERE}"]
  assert tpu("delete", fake_bin=fake_bin) == [f"{QR} delete my-v5e {WHERE} --force --quiet"]


def test_setup_copies_the_checkout_to_every_worker_of_every_slice(fake_bin):
  tar, scp, ssh = tpu("setup", fake_bin=fake_bin)
  assert tar == ("tar --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude=workdirs "
                 "-czf /tmp/semrec_jax.tgz .")
  assert scp == (f"{QR} scp /tmp/semrec_jax.tgz my-v5e:/tmp/semrec_jax.tgz {WHERE} "
                 "--node=all --worker=all")
  assert ssh.startswith(f"{QR} ssh my-v5e {WHERE} --node=all --worker=all --command=")
  assert remote_command(ssh) == (
      "mkdir -p ~/semrec_jax && tar -C ~/semrec_jax -xzf /tmp/semrec_jax.tgz && cd ~/semrec_jax"
      ' && python3 -m venv .venv && . .venv/bin/activate && pip install -q -e ".[tpu]"')


def test_run_starts_one_job_on_all_workers_each_logging_to_its_own_file(fake_bin):
  [line] = tpu("run", "--config=configs/tpu_gemma3_1b.py", "--workdir=/mnt/w", "--stages=lm",
               fake_bin=fake_bin)
  assert line.startswith(f"{QR} ssh my-v5e {WHERE} --node=all --worker=all --command=")
  assert remote_command(line) == (
      "cd ~/semrec_jax && . .venv/bin/activate && mkdir -p logs && { nohup python -m "
      "semrec_jax.main --config=configs/tpu_gemma3_1b.py --workdir=/mnt/w --stages=lm "
      "--multihost >> logs/worker.log 2>&1 < /dev/null & echo $! > logs/worker.pid; }")


def test_run_on_one_worker_waits_for_it_without_multihost(fake_bin):
  [line] = tpu("run", "--config=c.py", "--stages=prepare,embed,ids", fake_bin=fake_bin,
               WORKER="0")
  assert line.startswith(f"{QR} ssh my-v5e {WHERE} --node=0 --worker=0 --command=")
  assert remote_command(line) == (
      "cd ~/semrec_jax && . .venv/bin/activate && mkdir -p logs && { nohup python -m "
      "semrec_jax.main --config=c.py --stages=prepare,embed,ids >> logs/worker.log 2>&1 "
      "< /dev/null & echo $! > logs/worker.pid; wait $!; }")
  [line] = tpu("run", "--config=c.py", fake_bin=fake_bin, WORKER="2", NODE="1")
  assert " --node=1 --worker=2 " in line


def test_run_quotes_flags_so_the_workers_get_them_verbatim(fake_bin):
  odd = "--workdir=/mnt/it's a dir; rm -rf ~"
  [line] = tpu("run", "--config=c.py", odd, fake_bin=fake_bin)
  main_args = shlex.split(remote_command(line).split("nohup ", 1)[1].split(" >> ", 1)[0])
  assert main_args == ["python", "-m", "semrec_jax.main", "--config=c.py", odd, "--multihost"]


def test_logs_and_fetch_logs(fake_bin):
  assert tpu("logs", fake_bin=fake_bin) == [
      f"{QR} ssh my-v5e {WHERE} --node=0 --worker=0 "
      "--command='tail -n 100 -F ~/semrec_jax/logs/worker.log'"]
  assert " --node=1 --worker=3 " in tpu("logs", fake_bin=fake_bin, WORKER="3", NODE="1")[0]
  lines = tpu("fetch_logs", fake_bin=fake_bin, WORKERS="2", SLICES="2")
  assert lines == ["mkdir -p workdirs/tpu_logs/my-v5e"] + [
      f"{QR} scp my-v5e:semrec_jax/logs/worker.log "
      f"workdirs/tpu_logs/my-v5e/slice{node}_worker{worker}.log {WHERE} "
      f"--node={node} --worker={worker}" for node in (0, 1) for worker in (0, 1)]


def test_stop_signals_every_worker(fake_bin):
  [line] = tpu("stop", fake_bin=fake_bin)
  assert line.startswith(f"{QR} ssh my-v5e {WHERE} --node=all --worker=all --command=")
  assert remote_command(line) == ("cd ~/semrec_jax && if [ -f logs/worker.pid ]; then "
                                  "kill -TERM $(cat logs/worker.pid); rm logs/worker.pid; fi")


def test_remote_commands_detach_wait_log_and_stop(fake_bin, tmp_path):
  """The commands `run` and `stop` send, run by bash in a fake worker's home: the job detaches
  (or is waited for, with its exit status), appends to logs/worker.log, and SIGTERM reaches it."""
  home = tmp_path / "home"
  venv_bin = home / "semrec_jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  (venv_bin / "activate").write_text(f"PATH={venv_bin}:$PATH\n")
  (venv_bin / "python").write_text(
      "#!/bin/bash\necho \"python $*\"\ntrap 'kill $!; echo got TERM; exit 0' TERM\n"
      "case \"$*\" in *--fail*) exit 3 ;; esac\nsleep 30 & wait\n")
  (venv_bin / "python").chmod(0o755)
  env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
  log = home / "semrec_jax" / "logs" / "worker.log"

  def on_worker(line):
    return subprocess.run(["bash", "-c", remote_command(line)], env=env, capture_output=True,
                          text=True, timeout=20, check=False)

  [one] = tpu("run", "--config=c.py", "--fail", fake_bin=fake_bin, WORKER="0")
  assert on_worker(one).returncode == 3  # waited for, with the stage's exit status
  assert log.read_text() == "python -m semrec_jax.main --config=c.py --fail\n"

  [all_workers] = tpu("run", "--config=c.py", fake_bin=fake_bin)
  started = time.time()
  assert on_worker(all_workers).returncode == 0
  assert time.time() - started < 10  # detached: returns while the job runs
  assert (log.parent / "worker.pid").read_text().strip().isdigit()
  assert on_worker(tpu("stop", fake_bin=fake_bin)[0]).returncode == 0
  for _ in range(100):  # the job's TERM handler writes its last line
    if log.read_text().endswith("got TERM\n"):
      break
    time.sleep(0.1)
  assert log.read_text().splitlines()[-2:] == [
      "python -m semrec_jax.main --config=c.py --multihost", "got TERM"]
  assert not (log.parent / "worker.pid").exists()


@pytest.mark.parametrize("env,args,message", [
    ({"ZONE": "z", "PROJECT": "p"}, ["status"], "TPU is not set"),
    ({"TPU": "t", "PROJECT": "p"}, ["status"], "ZONE is not set"),
    ({"TPU": "t", "ZONE": "z"}, ["status"], "PROJECT is not set"),
    (TPU_ENV, ["create", "v7-8"], "unknown accelerator type 'v7-8'"),
    (TPU_ENV, ["create", "v5litepod"], "unknown accelerator type 'v5litepod'"),
    (TPU_ENV, ["create"], "create needs an accelerator type"),
    (TPU_ENV, ["create", "v5p-8", "--spot", "--reserved"], "--spot or --reserved, not both"),
    (TPU_ENV, ["create", "v5p-8", "--slices=0"], "--slices must be a positive number"),
    (TPU_ENV, ["create", "v5p-8", "--preemptible"], "unknown option '--preemptible'"),
    (TPU_ENV, ["run"], "run needs semrec_jax.main flags"),
    (TPU_ENV, ["fetch_logs"], "set WORKERS"),
    (TPU_ENV, ["reboot"], "unknown command 'reboot'"),
    (TPU_ENV, [], "usage:"),
])
def test_tpu_errors_are_one_clear_line(fake_bin, env, args, message):
  for dry_run in ([], ["--dry_run"]):  # checked before anything would run
    result = launch(TPU_VM, *dry_run, *args, env=env, fake_bin=fake_bin)
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("tpu_vm.sh: ") and message in line, line


def slurm_script(lines):
  """(the commands before the here-document, the batch script in it)."""
  at = lines.index("sbatch <<'EOF'")
  assert lines[-1] == "EOF"
  return lines[:at + 1], lines[at + 1:-1]


def test_slurm_submits_one_process_per_gpu(fake_bin):
  lines = dry(SLURM, "--config=configs/games.py", "--workdir=/shared/w", "--stages=lm",
              fake_bin=fake_bin, NODES="2", GPUS_PER_NODE="4", PORT="23456")
  commands, script = slurm_script(lines)
  assert commands == ["mkdir -p workdirs/slurm", "sbatch <<'EOF'"]
  assert script[0] == "#!/bin/bash"
  directives = [line for line in script if line.startswith("#SBATCH")]
  assert directives == ["#SBATCH --job-name=semrec_jax", "#SBATCH --nodes=2",
                        "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                        "#SBATCH --output=workdirs/slurm/%x-%j.out", "#SBATCH --signal=TERM@120"]
  # sbatch reads directives only before the first command
  first_command = next(i for i, line in enumerate(script[1:], 1) if not line.startswith("#"))
  assert all(not line.startswith("#SBATCH") for line in script[first_command:])
  assert ('export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | '
          'head -n 1):23456"') in script
  assert script[-1] == ("srun --kill-on-bad-exit=1 --output=workdirs/slurm/%x-%j.%t.out "
                        "python -m semrec_jax.main --config=configs/games.py --workdir=/shared/w "
                        "--stages=lm --multihost")
  assert subprocess.run(["bash", "-n"], input="\n".join(script), text=True,
                        check=False).returncode == 0


def test_slurm_defaults_and_port_from_the_job_id(fake_bin):
  _, script = slurm_script(dry(SLURM, "--config=c.py", fake_bin=fake_bin))
  assert "#SBATCH --nodes=1" in script and "#SBATCH --gpus-per-node=8" in script
  [export] = [line for line in script if line.startswith("export JAX_COORDINATOR_ADDRESS")]
  assert export.endswith(':$((SLURM_JOB_ID % 4096 + 61440))"')


@pytest.mark.parametrize("env,args,message", [
    ({}, [], "usage:"),
    ({"NODES": "0"}, ["--config=c.py"], "NODES must be a positive number"),
    ({"GPUS_PER_NODE": "x"}, ["--config=c.py"], "GPUS_PER_NODE must be a positive number"),
    ({"PORT": "http"}, ["--config=c.py"], "PORT must be a port number"),
])
def test_slurm_errors_are_one_clear_line(fake_bin, env, args, message):
  result = launch(SLURM, "--dry_run", *args, env=env, fake_bin=fake_bin)
  assert result.returncode != 0 and result.stdout == ""
  [line] = result.stderr.splitlines()
  assert line.startswith("slurm.sh: ") and message in line, line


_SLURM_TASK = """
import os
import jax
from semrec_jax import multihost
multihost.initialize()  # what main.py does with --multihost
# To a file of its own: a task's stdout, shared with gloo's C++ logging, lost the line in CI.
with open(os.environ["TASK_RESULT"], "w") as f:
  f.write(f"process {jax.process_index()} of {jax.process_count()} max "
          f"{int(multihost.max_over_processes(jax.process_index() + 10))}")
"""


def _output_within(task, seconds):
  """(stdout, stderr) of a task, killed when it runs longer than `seconds` (one hung once in CI
  while a training run shared the cores): what it printed until then still comes back."""
  try:
    return task.communicate(timeout=seconds)
  except subprocess.TimeoutExpired:
    task.kill()
    return task.communicate()


@pytest.mark.slow
def test_slurm_environment_starts_one_jax_job(fake_bin, tmp_path):
  """The batch script's coordinator line, run against a fake scontrol, then two processes with
  the variables srun sets: jax.distributed finds the coordinator, the count and each id."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  _, script = slurm_script(dry(SLURM, "--config=c.py", fake_bin=fake_bin, PORT=str(port)))
  [export] = [line for line in script if line.startswith("export JAX_COORDINATOR_ADDRESS")]
  scontrol = tmp_path / "scontrol_bin" / "scontrol"
  scontrol.parent.mkdir()
  scontrol.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames 127.0.0.1,node2" ] && '
                      'printf "127.0.0.1\\nnode2\\n"\n')
  scontrol.chmod(0o755)
  address = subprocess.run(
      ["bash", "-c", f"{export}; echo $JAX_COORDINATOR_ADDRESS"], capture_output=True, text=True,
      check=True, env={"PATH": f"{scontrol.parent}:/usr/bin:/bin", "SLURM_JOB_ID": "4242",
                       "SLURM_JOB_NODELIST": "127.0.0.1,node2"}).stdout.strip()
  assert address == f"127.0.0.1:{port}"

  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_", "OMPI_"))}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO, JAX_COORDINATOR_ADDRESS=address,
             SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="127.0.0.1,node2", SLURM_NTASKS="2",
             SLURM_STEP_NUM_NODES="2")
  tasks = [subprocess.Popen([sys.executable, "-c", _SLURM_TASK], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i),
                                 "TASK_RESULT": str(tmp_path / f"task{i}.txt")})
           for i in range(2)]
  outputs = [_output_within(task, 120) for task in tasks]
  assert [task.returncode for task in tasks] == [0, 0], [(out[-1000:], err[-2000:])
                                                         for out, err in outputs]
  results = [(tmp_path / f"task{i}.txt").read_text() for i in range(2)]
  assert results == ["process 0 of 2 max 11", "process 1 of 2 max 11"]


def _readme_section(title: str) -> str:
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _transcripts(section: str):
  """(command, printed lines) for each `$ ` line of the section's console blocks; a command
  continues over lines ending in a backslash."""
  steps = []
  for block in re.findall(r"```console\n(.*?)```", section, flags=re.S):
    lines = block.splitlines()
    i = 0
    while i < len(lines):
      assert lines[i].startswith("$ "), lines[i]
      command = lines[i][2:]
      while command.endswith("\\"):
        i += 1
        command = command[:-1] + lines[i].strip()
      i += 1
      printed = []
      while i < len(lines) and not lines[i].startswith("$ "):
        printed.append(lines[i])
        i += 1
      steps.append((command, printed))
  return steps


@pytest.mark.parametrize("title,script,verbs", [
    ("Run on a TPU pod", "launch/tpu_vm.sh",
     {"create", "status", "setup", "run", "logs", "fetch_logs", "stop", "delete"}),
    ("Run on a GPU cluster", "launch/slurm.sh", set())])
def test_readme_walkthroughs_are_what_dry_run_prints(fake_bin, title, script, verbs):
  exports, runs, shown_verbs = [], 0, set()
  for command, printed in _transcripts(_readme_section(title)):
    if command.startswith("export "):
      exports.append(command)
      assert printed == []
      continue
    words = shlex.split(command)
    assert script in words and "--dry_run" in words, command
    runs += 1
    if verbs:
      shown_verbs.add(words[words.index("--dry_run") + 1])
    result = subprocess.run(["bash", "-c", "; ".join(exports + [command])], cwd=REPO,
                            capture_output=True, text=True, check=False,
                            env={"PATH": f"{fake_bin}:/usr/bin:/bin",
                                 "HOME": os.environ.get("HOME", "/tmp")})
    assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
    assert result.stdout.splitlines() == printed, command
  assert not (fake_bin.parent / "called").exists()
  assert runs >= 2 and shown_verbs == verbs
