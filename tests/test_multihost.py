"""Two processes on 127.0.0.1 train one model together (jax.distributed, gloo collectives on CPU),
started as the printed experiment commands are, and stop together on one host's SIGTERM."""

import json
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time

import chex
import pytest

from experiments import runs
from tests.xla_flags import xla_flags
from vit_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).parent.parent


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_together_and_agree_on_the_parameters(tmp_path):
  coordinator = f"127.0.0.1:{free_port()}"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  workers = [subprocess.Popen([sys.executable, "-m", "tests.multihost_worker", coordinator, str(i),
                               str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [worker.communicate(timeout=300) for worker in workers]
  for worker, (_, stderr) in zip(workers, outputs):
    assert worker.returncode == 0, stderr[-3000:]
  summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
  assert sorted(s["process"] for s in summaries) == [0, 1]
  assert all(s["devices"] == 4 and s["local_devices"] == 2 and s["step"] == 6 for s in summaries)
  assert summaries[0]["fingerprint"] == summaries[1]["fingerprint"]
  assert summaries[0]["accuracy"] == summaries[1]["accuracy"]
  assert workdir_lib.read_results(tmp_path)["steps"] == 6


TINY = (("model.hidden_size", 32), ("model.transformer.num_layers", 1), ("model.transformer.mlp_dim", 64),
        ("model.transformer.num_heads", 2), ("batch_size", 32), ("eval_every", 100_000),
        ("optimizer.warmup_steps", 2))


def launch_printed_command(command: str, port: int, process_id: int) -> subprocess.Popen:
  """Runs a command as `experiments/... --print_only` prints it, on one of two local 'hosts'."""
  argv = shlex.split(command)
  assert argv[:3] == ["python", "-m", "vit_jax.main"], command
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=xla_flags(2),
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
             JAX_PROCESS_ID=str(process_id))
  return subprocess.Popen([sys.executable, *argv[1:]], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def launch_pair(workdir, overrides) -> list[subprocess.Popen]:
  command = runs.Run("digits", None, str(workdir), TINY + overrides).command()
  port = free_port()
  return [launch_printed_command(command, port, i) for i in range(2)]


def checkpoint_steps(workdir) -> list[int]:
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def wait_all(processes) -> list[str]:
  logs = [p.communicate(timeout=900)[1] for p in processes]
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-3000:]
  return logs


@pytest.mark.slow
def test_sigterm_to_one_host_stops_all_at_one_step_and_the_resumed_run_is_bitwise_equal(tmp_path):
  """Started as the printed experiment commands are, from the environment's coordinator variables."""
  # One compilation cache for the three pairs: the reference compiles nothing (the default, one per
  # workdir, puts the workdir's path into XLA's options). 60 steps leave ample room: the signal comes
  # after the first checkpoint, and the hosts stop about one step after it.
  total_steps, every = 60, 5
  overrides = (("total_steps", total_steps), ("checkpoint_every", every), ("log_every", 100),
               ("keep_checkpoints", 100), ("compilation_cache", str(tmp_path / "compilation_cache")))
  victims = launch_pair(tmp_path / "preempted", overrides)
  deadline = time.time() + 900
  while not checkpoint_steps(tmp_path / "preempted"):
    assert all(v.poll() is None for v in victims) and time.time() < deadline, "ended before SIGTERM"
    time.sleep(0.02)
  victims[1].send_signal(signal.SIGTERM)
  logs = wait_all(victims)
  assert all("Process %d of 2, 2 local / 4 global devices" % i in log for i, log in enumerate(logs))
  stopped_at = checkpoint_steps(tmp_path / "preempted")[-1]
  regular = list(range(every, stopped_at, every))
  assert every < stopped_at < total_steps
  assert checkpoint_steps(tmp_path / "preempted") == regular + [stopped_at]
  assert all(f"saved step {stopped_at} and stopping" in log for log in logs)
  assert workdir_lib.read_results(tmp_path / "preempted") is None

  logs = wait_all(launch_pair(tmp_path / "preempted", overrides))
  assert all(f"Resuming from step {stopped_at}" in log for log in logs)
  wait_all(launch_pair(tmp_path / "reference", overrides))
  _, expected = workdir_lib.load_params(tmp_path / "reference")
  _, resumed = workdir_lib.load_params(tmp_path / "preempted")
  chex.assert_trees_all_equal(resumed, expected)
