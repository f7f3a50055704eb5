"""What a run is, for the log and TensorBoard's hparams tab: the config, the code's git revision, and
the JAX version and devices it ran on; enough to tell two runs apart long after."""

import pathlib
import subprocess
from typing import Any

from absl import logging
import jax
import ml_collections

_REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def git_revision() -> str:
  """The commit of this checkout, '+dirty' with uncommitted changes; where there is no .git (a copy
  that launch/tpu_pod.sh made), the REVISION file it wrote; else 'unknown'."""
  def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=_REPOSITORY, capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()
  try:
    return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                                       else "")
  except (OSError, subprocess.SubprocessError):
    stamp = _REPOSITORY / "REVISION"
    return stamp.read_text().strip() if stamp.exists() else "unknown"


def flatten(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
  """{'optimizer.learning_rate': 0.001, ...}: numbers, strings and bools as they are, others as text."""
  flat = {}
  for key, value in (config.items() if hasattr(config, "items") else []):
    if hasattr(value, "items"):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return flat


def environment() -> dict[str, Any]:
  devices = jax.devices()
  return {"git_revision": git_revision(), "jax_version": jax.__version__,
          "device_kind": devices[0].device_kind, "device_count": len(devices),
          "process_count": jax.process_count()}


def record(config: ml_collections.ConfigDict, writer: Any) -> None:
  """Logs the run's environment and config, and writes both as TensorBoard hparams (`writer`: a clu
  MetricWriter)."""
  env = environment()
  logging.info("Run: %s", ", ".join(f"{k}={v}" for k, v in env.items()))
  logging.info("Config: %s", config.to_json_best_effort(sort_keys=True))
  writer.write_hparams({**flatten(config), **env})
