"""The command line: a misspelt or mistyped config override fails at start-up and says what is valid."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def run_main(tmp_path, *flags):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "vit_jax.main", "--config=configs/digits.py",
                         f"--workdir={tmp_path}", *flags], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)


def test_misspelt_override_lists_the_valid_keys(tmp_path):
  result = run_main(tmp_path, "--config.optimizer.lerning_rate=0.1")
  assert result.returncode != 0
  assert "Unknown config key 'optimizer.lerning_rate'" in result.stderr
  assert "'learning_rate'" in result.stderr and "'warmup_steps'" in result.stderr
  assert not (tmp_path / "config.json").exists()


def test_mistyped_override_names_the_flag(tmp_path):
  result = run_main(tmp_path, "--config.batch_size=many")
  assert result.returncode != 0
  assert "--config.batch_size=many" in result.stderr
