"""What makes a long run observable and cheap to restart: profiler trace, run description, persistent
compilation cache, and checkpoints kept for ever at a period."""

import pathlib
import subprocess

import jax
import jax.numpy as jnp
from jax.experimental.compilation_cache import compilation_cache as jax_cache
import numpy as np
import pytest

from configs import common
from vit_jax import compilation_cache
from vit_jax import profiling
from vit_jax import run_info
from vit_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).parent.parent


def test_the_tracer_writes_one_profile_to_the_workdir_and_stops_after_the_last_step(tmp_path):
  tracer = profiling.StepTracer(str(tmp_path), (2, 3))
  double = jax.jit(lambda x: 2 * x)
  x = jnp.ones(4)
  for step in range(1, 6):
    tracer.before_step(step)
    x = double(x)
    tracer.after_step(step, x)
    if step == 3:  # a second trace can start only if the tracer stopped its own
      jax.profiler.start_trace(str(tmp_path / "other"))
      jax.profiler.stop_trace()
  traces = list(tmp_path.glob("plugins/profile/*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_profile_steps_must_be_a_first_last_pair():
  with pytest.raises(ValueError, match=r"config.profile_steps=\(3,\)"):
    profiling.StepTracer("/tmp", (3,))


def test_the_run_description_has_the_config_the_git_revision_and_the_devices():
  config = common.get_config()
  flat = run_info.flatten(config)
  assert flat["optimizer.learning_rate"] == config.optimizer.learning_rate
  assert flat["model.patches.size"] == "(16, 16)"
  env = run_info.environment()
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
  assert env["git_revision"].removesuffix("+dirty") == head.strip()
  assert env["device_count"] == 8 and env["jax_version"] == jax.__version__


def test_a_copy_without_git_reports_the_revision_the_launcher_wrote(tmp_path, monkeypatch):
  (tmp_path / "REVISION").write_text("0123abc+dirty\n")
  monkeypatch.setattr(run_info, "_REPOSITORY", tmp_path)
  assert run_info.git_revision() == "0123abc+dirty"


def test_the_compilation_cache_stores_compiled_functions_in_the_workdir(tmp_path):
  jax_cache.reset_cache()
  try:
    for run in ("first", "second"):  # runs of a study, one after another in one process
      folder = compilation_cache.enable("workdir", str(tmp_path / run), min_compile_seconds=0)
      jax.jit(lambda x, run=run: jnp.sin(x) * len(run)).lower(np.ones(7, np.float32)).compile()
      assert folder == str(tmp_path / run / "compilation_cache") and any(pathlib.Path(folder).iterdir())
  finally:
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()


def test_a_shared_cache_keeps_even_quick_compiles_and_a_runs_own_keeps_only_slow_ones(tmp_path):
  jax_cache.reset_cache()
  try:
    shared = compilation_cache.enable(str(tmp_path / "shared"), str(tmp_path / "run"))
    jax.jit(lambda x: jnp.cos(x) + 3).lower(np.ones(5, np.float32)).compile()
    assert shared == str(tmp_path / "shared") and any(pathlib.Path(shared).iterdir())
    own = compilation_cache.enable("workdir", str(tmp_path / "run"))
    jax.jit(lambda x: jnp.cos(x) + 4).lower(np.ones(5, np.float32)).compile()
    assert not pathlib.Path(own).exists() or not any(pathlib.Path(own).iterdir())
  finally:
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()


def test_checkpoints_at_the_keep_period_survive_the_keep_last_limit(tmp_path):
  manager = workdir_lib.checkpoint_manager(tmp_path, keep=2, keep_every=4)
  for step in range(1, 11):
    workdir_lib.save_state(manager, step, {"w": np.full(3, step, np.float32)})
  manager.wait_until_finished()
  assert sorted(manager.all_steps()) == [4, 8, 9, 10]
  manager.close()
