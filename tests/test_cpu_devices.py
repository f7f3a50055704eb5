"""One host device per core: chosen only where it is safe, and the runs train the same as on one device."""

import os
import pathlib
import re
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import digits
from tests.xla_flags import xla_flags
from vit_jax import cpu_devices
from vit_jax import input_pipeline
from vit_jax import sharding
from vit_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).parent.parent
TINY = ["--config=configs/digits.py", "--config.model.hidden_size=32",
        "--config.model.transformer.num_layers=1", "--config.model.transformer.mlp_dim=64",
        "--config.model.transformer.num_heads=2", "--config.batch_size=32",
        "--config.eval_every=100000", "--config.log_every=1", "--config.optimizer.warmup_steps=1",
        "--config.optimizer.schedule=constant"]  # the same steps whatever total_steps is


@pytest.mark.parametrize("sizes, cores, expected", [
    ([128, 300], 2, 2), ([128, 300], 8, 4), ([127, 300], 2, 1), ([96, 1000, 512], 16, 8), ([], 4, 4),
    ([4096], 64, cpu_devices.MAX_HOST_DEVICES)])
def test_device_count_divides_every_batch(sizes, cores, expected):
  assert cpu_devices.host_device_count(sizes, cores) == expected


def test_config_batch_sizes():
  config = digits.get_config()
  assert cpu_devices.config_batch_sizes(config) == [128, 300]  # on by default
  config.host_device_per_core = False
  assert cpu_devices.config_batch_sizes(config) is None
  config.host_device_per_core = True
  config.optimizer.accum_steps = 4
  config.fewshot = dict(shots=[5], batch_size=250)
  assert cpu_devices.config_batch_sizes(config) == [32, 300, 250]
  config.mesh.data = 2  # the user chose the layout
  assert cpu_devices.config_batch_sizes(config) is None


def test_user_device_count_and_accelerators_are_left_alone(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
  assert cpu_devices.use_host_devices([128]) == 0
  monkeypatch.delenv("XLA_FLAGS")
  for platforms, possible in [("cuda", True), ("tpu,cpu", True), ("cpu", False)]:
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert cpu_devices.accelerator_possible() == possible
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert cpu_devices.use_host_devices([128]) == 0


def test_initialised_jax_keeps_its_devices(monkeypatch):
  assert jax.device_count() == 8  # initialised (with the suite's 8 devices) before the settings change
  monkeypatch.delenv("XLA_FLAGS")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert cpu_devices.use_host_devices([1024]) == 0
  assert jax.device_count() == 8


def test_data_order_does_not_depend_on_the_device_count():
  config = digits.get_config().dataset
  batches = {}
  for count in (1, 2, 8):
    mesh = sharding.create_mesh(digits.get_config().mesh, jax.devices()[:count])
    stream = input_pipeline.train_batches(config, global_batch_size=32, seed=0, start_step=5,
                                          sharding=sharding.batch_sharding(mesh))
    batches[count] = [jax.device_get(next(stream)) for _ in range(2)]
    stream.close()
  chex.assert_trees_all_equal(batches[1], batches[2], batches[8])


def _train(workdir: pathlib.Path, steps: int, device_count: int | None) -> subprocess.Popen:
  """main.py in a fresh process: `device_count` host devices, or the default (None)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(device_count))
  return subprocess.Popen(
      [sys.executable, "-m", "vit_jax.main", f"--workdir={workdir}", *TINY,
       f"--config.total_steps={steps}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> str:
  _, stderr = process.communicate(timeout=900)
  assert process.returncode == 0, stderr[-3000:]
  return stderr


@pytest.mark.slow
def test_default_devices_train_like_one_device_and_resume_across_counts(tmp_path):
  """Steps 1-2 on one device, 3-4 on the default host devices, against 1-4 on one device."""
  one = _train(tmp_path / "one", 4, 1)
  _finish(_train(tmp_path / "resumed", 2, 1))
  log = _finish(_train(tmp_path / "resumed", 4, None))
  _finish(one)
  expected = cpu_devices.host_device_count([32, 300], len(os.sched_getaffinity(0)))
  if expected > 1:
    assert f"CPU devices: {expected} host devices" in log
  assert re.search(rf"examples, {expected} devices", log)
  assert "Resuming from step 2" in log
  _, reference = workdir_lib.load_params(tmp_path / "one")
  _, params = workdir_lib.load_params(tmp_path / "resumed")
  chex.assert_trees_all_close(params, reference, atol=2e-5, rtol=1e-4)
  results = [workdir_lib.read_results(tmp_path / name) for name in ("one", "resumed")]
  np.testing.assert_allclose(results[0]["accuracy"], results[1]["accuracy"], atol=1 / 300)
