"""A run killed with SIGKILL and started again ends bitwise where an uninterrupted run ends, whatever
the kill left on disk: a finished checkpoint without results, a half-written last checkpoint, a damaged
one; and a relaunch may change only what its checkpoints allow."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from tests.xla_flags import xla_flags
from vit_jax import train
from vit_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).parent.parent
TOTAL_STEPS = 300
FLAGS = ["--config=configs/digits.py", "--config.model.hidden_size=32",
         "--config.model.transformer.num_layers=1", "--config.model.transformer.mlp_dim=64",
         "--config.model.transformer.num_heads=2", "--config.batch_size=32",
         f"--config.total_steps={TOTAL_STEPS}", "--config.checkpoint_every=50",
         "--config.eval_every=100000", "--config.log_every=100", "--config.optimizer.warmup_steps=10"]


def launch(workdir, compilation_cache):
  """main.py on the host devices it chooses, like a user's laptop; the runs share one compilation
  cache (the default, one per workdir, puts the workdir's path into XLA's options)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=xla_flags())
  return subprocess.Popen([sys.executable, "-m", "vit_jax.main", f"--workdir={workdir}", *FLAGS,
                           f"--config.compilation_cache={compilation_cache}"],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)


def finished_steps(workdir):
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


@pytest.mark.slow
def test_sigkill_then_restart_matches_an_uninterrupted_run(tmp_path):
  cache = tmp_path / "compilation_cache"
  reference = launch(tmp_path / "reference", cache)
  victim = launch(tmp_path / "killed", cache)
  deadline = time.time() + 300
  while not any(step >= 50 for step in finished_steps(tmp_path / "killed")):
    assert victim.poll() is None and time.time() < deadline, "run ended before it could be killed"
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  killed_at = max(finished_steps(tmp_path / "killed"))
  assert victim.returncode == -signal.SIGKILL and killed_at < TOTAL_STEPS
  assert workdir_lib.read_results(tmp_path / "killed") is None

  restarted = launch(tmp_path / "killed", cache)
  assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
  assert restarted.wait(timeout=300) == 0, restarted.stderr.read()[-3000:]
  assert "Resuming from step" in restarted.stderr.read()
  _, expected = workdir_lib.load_params(tmp_path / "reference")
  _, resumed = workdir_lib.load_params(tmp_path / "killed")
  chex.assert_trees_all_equal(resumed, expected)  # bitwise


@pytest.fixture(scope="module")
def config_for(tmp_path_factory):
  """total_steps -> the tiny config, with one compilation cache for the in-process runs (the default,
  one per workdir, puts the workdir's path into XLA's options): a rerun in a copied workdir compiles
  nothing."""
  cache = str(tmp_path_factory.mktemp("compilation_cache"))
  return lambda total_steps: tiny_config(total_steps=total_steps, compilation_cache=cache)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, config_for):
  """A tiny run to step 3, relaunched with total_steps=6: checkpoints 3 and 6 and results; returns the
  workdir, the params at step 3 and 6, and the results."""
  workdir = tmp_path_factory.mktemp("finished")
  train.train_and_evaluate(config_for(3), str(workdir))
  _, at_3 = workdir_lib.load_params(workdir)
  state, results = train.train_and_evaluate(config_for(6), str(workdir))
  return workdir, at_3, jax.device_get(state.params), results


def copy_run(finished_run, tmp_path):
  return pathlib.Path(shutil.copytree(finished_run[0], tmp_path / "run"))


def array_file(step_dir):
  """The largest array data file of an orbax step folder."""
  return max((p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"),
             key=lambda p: p.stat().st_size)


def truncate(step_dir):
  path = array_file(step_dir)
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def garble(step_dir):
  path = array_file(step_dir)
  path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def garble_manifest(step_dir):
  for path in step_dir.rglob("manifest.ocdbt"):
    path.write_bytes(b"not a manifest" * 8)


def remove_metadata(step_dir):
  (step_dir / "default" / "_METADATA").unlink()


def empty(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


@pytest.mark.slow
def test_a_relaunch_with_more_steps_resumes_and_records_the_change(finished_run):
  workdir = finished_run[0]
  entries = [json.loads(line) for line in (workdir / workdir_lib.CONFIG_CHANGES_FILE).read_text().splitlines()]
  assert len(entries) == 1
  assert entries[0]["step"] == 3 and entries[0]["changes"] == {"total_steps": {"old": 3, "new": 6}}
  assert workdir_lib.read_config(workdir).total_steps == 6
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [3, 6]


def test_a_relaunch_that_changes_the_model_or_data_is_refused_before_writing(
    finished_run, tmp_path, config_for):
  workdir = copy_run(finished_run, tmp_path)
  stored = (workdir / workdir_lib.CONFIG_FILE).read_bytes()
  config = config_for(6)
  config.model.hidden_size = 48
  config.dataset.image_size = 16
  with pytest.raises(workdir_lib.WorkdirError) as error:
    train.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert str(workdir) in message and "new run with another --workdir" in message
  assert "model.hidden_size: 64 in the run, 48 now" in message
  assert "dataset.image_size: 8 in the run, 16 now" in message
  assert (workdir / workdir_lib.CONFIG_FILE).read_bytes() == stored
  _, params = workdir_lib.load_params(workdir)  # what predict --workdir does
  chex.assert_trees_all_equal(params, finished_run[2])


@pytest.mark.slow
def test_a_rerun_after_a_kill_between_the_last_save_and_the_results_evaluates_it(
    finished_run, tmp_path, config_for):
  workdir = copy_run(finished_run, tmp_path)
  (workdir / workdir_lib.RESULTS_FILE).unlink()  # what a kill there leaves: checkpoint 6, no results
  state, results = train.train_and_evaluate(config_for(6), str(workdir))
  assert int(state.step) == 6
  written = workdir_lib.read_results(workdir)
  assert written == json.loads(json.dumps(results)) and written["steps"] == 6
  for key in ("accuracy", "top5", "loss"):
    assert written[key] == pytest.approx(finished_run[3][key], rel=1e-6), key


@pytest.mark.slow
def test_a_rerun_after_a_kill_during_the_last_save_redoes_the_last_steps(finished_run, tmp_path, config_for):
  workdir = copy_run(finished_run, tmp_path)
  # A kill during orbax's async save leaves the step under its temporary name, partly written.
  half_written = workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1764637200000000"
  (workdir / "checkpoints" / "6").rename(half_written)
  truncate(half_written)
  (workdir / workdir_lib.RESULTS_FILE).unlink()
  state, results = train.train_and_evaluate(config_for(6), str(workdir))
  assert int(state.step) == 6 and results["steps"] == 6
  chex.assert_trees_all_equal(jax.device_get(state.params), finished_run[2])  # bitwise
  assert workdir_lib.read_results(workdir)["accuracy"] == pytest.approx(finished_run[3]["accuracy"])


@pytest.mark.parametrize("damage", [truncate, garble, garble_manifest, remove_metadata, empty],
                         ids=lambda f: f.__name__)
def test_loading_a_run_falls_back_past_a_damaged_latest_checkpoint(finished_run, tmp_path, caplog, damage):
  workdir = copy_run(finished_run, tmp_path)
  damage(workdir / "checkpoints" / "6")
  _, params = workdir_lib.load_params(workdir)
  chex.assert_trees_all_equal(params, finished_run[1])
  assert f"Checkpoint {workdir / 'checkpoints' / '6'} does not restore" in caplog.text
  assert (workdir / "checkpoints" / "6").exists()  # kept for inspection


@pytest.mark.slow
def test_training_resumes_from_the_newest_checkpoint_that_restores(
    finished_run, tmp_path, caplog, config_for):
  workdir = copy_run(finished_run, tmp_path)
  truncate(workdir / "checkpoints" / "6")
  (workdir / workdir_lib.RESULTS_FILE).unlink()
  state, results = train.train_and_evaluate(config_for(6), str(workdir))
  assert int(state.step) == 6 and results["steps"] == 6
  chex.assert_trees_all_equal(jax.device_get(state.params), finished_run[2])  # bitwise
  assert f"Checkpoint {workdir / 'checkpoints' / '6'} does not restore" in caplog.text
  moved = list((workdir / workdir_lib.BROKEN_DIR).iterdir())
  assert len(moved) == 1 and moved[0].name.startswith("6-")
