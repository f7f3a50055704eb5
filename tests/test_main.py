"""The command line: a misspelt, mistyped or unusable config override fails at start-up in one line."""

import errno
import logging
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def run_main(tmp_path, *flags):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "vit_jax.main", "--config=configs/digits.py",
                         f"--workdir={tmp_path}", *flags], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_misspelt_override_lists_the_valid_keys(tmp_path):
  result = run_main(tmp_path, "--config.optimizer.lerning_rate=0.1")
  assert result.returncode != 0
  assert "Unknown config key 'optimizer.lerning_rate'" in result.stderr
  assert "'learning_rate'" in result.stderr and "'warmup_steps'" in result.stderr
  assert not (tmp_path / "config.json").exists()


def test_mistyped_override_is_one_line_naming_the_flag(tmp_path):
  result = run_main(tmp_path, "--config.total_steps=abc")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert [line for line in result.stderr.splitlines() if "total_steps" in line] == [
      "FATAL Flags parsing error: flag --config.total_steps=abc: invalid literal for int() with base 10: 'abc'"]


def test_a_config_value_no_run_can_use_is_one_line_naming_the_key(tmp_path):
  result = run_main(tmp_path, "--config.checkpoint_every=0")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert [line for line in result.stderr.splitlines() if "checkpoint_every" in line] == [
      "FATAL ConfigError: config.checkpoint_every=0 (int): must be a positive integer; "
      "set --config.checkpoint_every=... accordingly."]
  assert not (tmp_path / "config.json").exists()


def test_orbax_tracebacks_of_a_full_disk_stay_out_of_the_log():
  """Orbax logs a full disk once per save thread, with a traceback; the run's one line replaces them."""
  from vit_jax import main  # pylint: disable=g-import-not-at-top  (defines the absl flags)

  def record_of(error):
    try:
      raise RuntimeError("Save Finalize thread failed") from error
    except RuntimeError:
      info = sys.exc_info()
    return logging.LogRecord("absl", logging.ERROR, "/site-packages/orbax/checkpoint/manager.py", 1,
                             "save failed", None, info)

  assert not main._no_disk_full_tracebacks(record_of(OSError(errno.ENOSPC, "No space left on device")))
  assert main._no_disk_full_tracebacks(record_of(OSError(errno.EACCES, "Permission denied")))
