"""The benchmark scripts start both as `python benchmarks/x.py` (from anywhere) and `python -m benchmarks.x`."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
  """No PYTHONPATH (the script must find its own repository) and not the suite's 8 fake devices."""
  return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}


@pytest.mark.parametrize("script", ["throughput", "input_pipeline"])
@pytest.mark.parametrize("as_module", [False, True])
def test_benchmark_starts_as_file_and_as_module(script, as_module, tmp_path):
  command = ["-m", f"benchmarks.{script}"] if as_module else [str(REPO / "benchmarks" / f"{script}.py")]
  out = subprocess.run([sys.executable, *command, "--help"], cwd=REPO if as_module else tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("usage:")


def test_table_runs_as_a_file(tmp_path):
  out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "table.py"), str(tmp_path), "row1"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert f"| row1 | failed (see {tmp_path}/row1.log)" in out.stdout
