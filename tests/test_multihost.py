"""Two processes on 127.0.0.1 train one model together (jax.distributed, gloo collectives on CPU)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

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
