"""A run killed with SIGKILL and started again ends bitwise where an uninterrupted run ends."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import pytest

from vit_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).parent.parent
TOTAL_STEPS = 300
FLAGS = ["--config=configs/digits.py", "--config.model.hidden_size=32",
         "--config.model.transformer.num_layers=1", "--config.model.transformer.mlp_dim=64",
         "--config.model.transformer.num_heads=2", "--config.batch_size=32",
         f"--config.total_steps={TOTAL_STEPS}", "--config.checkpoint_every=50",
         "--config.eval_every=100000", "--config.log_every=100", "--config.optimizer.warmup_steps=10"]


def launch(workdir):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)  # one device, like a user's laptop
  return subprocess.Popen([sys.executable, "-m", "vit_jax.main", f"--workdir={workdir}", *FLAGS],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)


def finished_steps(workdir):
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


@pytest.mark.slow
def test_sigkill_then_restart_matches_an_uninterrupted_run(tmp_path):
  reference = launch(tmp_path / "reference")
  victim = launch(tmp_path / "killed")
  deadline = time.time() + 300
  while not any(step >= 50 for step in finished_steps(tmp_path / "killed")):
    assert victim.poll() is None and time.time() < deadline, "run ended before it could be killed"
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  killed_at = max(finished_steps(tmp_path / "killed"))
  assert victim.returncode == -signal.SIGKILL and killed_at < TOTAL_STEPS
  assert workdir_lib.read_results(tmp_path / "killed") is None

  restarted = launch(tmp_path / "killed")
  assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
  assert restarted.wait(timeout=300) == 0, restarted.stderr.read()[-3000:]
  assert "Resuming from step" in restarted.stderr.read()
  _, expected = workdir_lib.load_params(tmp_path / "reference")
  _, resumed = workdir_lib.load_params(tmp_path / "killed")
  chex.assert_trees_all_equal(resumed, expected)  # bitwise
