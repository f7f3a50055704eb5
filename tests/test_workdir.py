"""The workdir's guards: one run at a time (a lock a killed run does not leave stuck), and a full disk
reported in one line naming the workdir; and checkpoints that a single process saves without compiling."""

import errno
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from orbax.checkpoint._src.path import async_path

from tests.test_train import tiny_config
from vit_jax import train
from vit_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).parent.parent
HOLD_THE_LOCK = """
import sys, time
from vit_jax import workdir
with workdir.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def test_a_second_run_on_a_workdir_in_use_refuses_at_once(tmp_path):
  with workdir_lib.lock(tmp_path):
    with pytest.raises(workdir_lib.WorkdirError) as error:
      train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert str(error.value).startswith(
      f"{tmp_path} is in use by pid {os.getpid()} on host {socket.gethostname()}")
  assert "another --workdir" in str(error.value)
  assert not (tmp_path / workdir_lib.CONFIG_FILE).exists()


def test_a_killed_run_does_not_leave_its_workdir_locked(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use by pid {holder.pid} on host"):
      with workdir_lib.lock(tmp_path):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with workdir_lib.lock(tmp_path):  # the OS dropped the dead process's lock
    assert (tmp_path / workdir_lib.LOCK_FILE).read_text() == (
        f"pid {os.getpid()} on host {socket.gethostname()}")


def test_a_full_disk_during_a_save_is_one_line_naming_the_workdir_and_the_resume_step(tmp_path, monkeypatch):
  manager = workdir_lib.checkpoint_manager(tmp_path, keep=3)
  state = {"w": jnp.arange(8.)}
  workdir_lib.save_state(manager, 1, state)
  workdir_lib.wait_for_saves(manager, 1)

  async def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(async_path, "write_text", disk_full)  # orbax's commit, in its save thread
  workdir_lib.save_state(manager, 2, state)
  with pytest.raises(workdir_lib.WorkdirError) as error:
    workdir_lib.wait_for_saves(manager, 2)
  assert str(error.value) == (f"No space left on device writing checkpoint 2 to {tmp_path}; free space "
                              f"and rerun to resume from step 1.")
  assert error.value.__cause__ is None and error.value.__suppress_context__


def test_other_save_errors_are_not_reported_as_a_full_disk(tmp_path, monkeypatch):
  manager = workdir_lib.checkpoint_manager(tmp_path, keep=3)

  async def denied(*args, **kwargs):
    raise OSError(errno.EACCES, "Permission denied")

  monkeypatch.setattr(async_path, "write_text", denied)
  workdir_lib.save_state(manager, 1, {"w": jnp.arange(8.)})
  with pytest.raises(OSError, match="Permission denied"):
    workdir_lib.wait_for_saves(manager, 1)


def test_a_write_killed_midway_leaves_the_previous_config_and_results(tmp_path, monkeypatch):
  workdir_lib.write_config(tmp_path, tiny_config(total_steps=3))
  workdir_lib.write_results(tmp_path, {"accuracy": 0.5})
  path_type = type(workdir_lib.epath.Path(tmp_path))
  original = path_type.write_text

  def write_half_then_die(self, text, *args, **kwargs):
    original(self, text[:len(text) // 2], *args, **kwargs)
    raise OSError("killed")

  monkeypatch.setattr(path_type, "write_text", write_half_then_die)
  with pytest.raises(OSError, match="killed"):
    workdir_lib.write_config(tmp_path, tiny_config(total_steps=7))
  with pytest.raises(OSError, match="killed"):
    workdir_lib.write_results(tmp_path, {"accuracy": 0.9})
  monkeypatch.undo()
  assert workdir_lib.read_config(tmp_path).total_steps == 3
  assert workdir_lib.read_results(tmp_path) == {"accuracy": 0.5}


def test_a_resume_accepts_keys_the_code_added_since_and_still_refuses_model_changes(tmp_path):
  config = tiny_config(total_steps=3)
  old_code = config.to_dict()
  del old_code["dataset"]["randaugment_reference_size"]  # a key a later version of the code added
  workdir_lib.write_config(tmp_path, ml_collections.ConfigDict(old_code))
  changes = workdir_lib.check_resume_config(tmp_path, config, has_checkpoint=True)
  assert changes == {"dataset.randaugment_reference_size": (None, 0)}

  old_code["model"]["resnet"] = None  # the run was a plain ViT; a ResNet stem now is a new model
  workdir_lib.write_config(tmp_path, ml_collections.ConfigDict(old_code))
  config.model.resnet = ml_collections.ConfigDict(dict(num_layers=(1,), width_factor=1))
  with pytest.raises(workdir_lib.WorkdirError, match=r"model\.resnet\.num_layers: None in the run"):
    workdir_lib.check_resume_config(tmp_path, config, has_checkpoint=True)


def test_a_resume_may_change_how_the_cpu_runs_the_step(tmp_path):
  """Host devices change only float rounding (like `mesh`), freed-memory reuse nothing at all."""
  config = tiny_config(total_steps=3)
  workdir_lib.write_config(tmp_path, config)
  config.host_device_per_core = not config.host_device_per_core
  config.reuse_freed_host_memory = not config.reuse_freed_host_memory
  changes = workdir_lib.check_resume_config(tmp_path, config, has_checkpoint=True)
  assert set(changes) == {"host_device_per_core", "reuse_freed_host_memory"}


def test_a_single_process_saves_replicated_arrays_whole_and_compiles_nothing(tmp_path):
  """Orbax's default (replica-parallel) would slice each array into one piece per device, compiling
  a slice program per (array, piece): 16 of them for these two arrays on 8 devices."""
  replicated = jax.sharding.NamedSharding(jax.sharding.Mesh(jax.devices(), ("data",)),
                                          jax.sharding.PartitionSpec())
  state = {"a": jax.device_put(np.arange(8 * 37, dtype=np.float32).reshape(8, 37), replicated),
           "b": jax.device_put(np.ones((16, 29), np.float32), replicated)}
  compiles = []
  listener = lambda event, seconds, **kwargs: compiles.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    manager = workdir_lib.checkpoint_manager(tmp_path, keep=1)
    workdir_lib.save_state(manager, 1, state)
    workdir_lib.wait_for_saves(manager, 1)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert "/jax/core/compile/backend_compile_duration" not in compiles
  restored = workdir_lib.restore_state(manager, state)
  np.testing.assert_array_equal(restored["a"], state["a"])
  assert restored["b"].sharding == replicated
  manager.close()
