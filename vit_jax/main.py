"""Command-line entry: parses flags and calls `train.train_and_evaluate`; nothing else lives here.

  python -m vit_jax.main --config=configs/digits.py --workdir=runs/digits [--config.total_steps=100]

A config no run can use, a workdir in use or holding an incompatible run, a full disk or a diverged
run end with one line on stderr and exit status 2.

Multi-host: run the same command on every host. TPU VMs, SLURM job steps and the variables
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID are detected (vit_jax/distributed.py);
or pass --coordinator_address=HOST:PORT --num_processes=N --process_id=I. --nodistributed opts out.
"""

import importlib.util
import json
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vit_jax import cpu_devices
from vit_jax import host_memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go (local or gs://).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "Multi-host: index of this process.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", True,
    "Join a multi-host run when one is detected (TPU VM, SLURM, JAX_COORDINATOR_ADDRESS).")
flags.mark_flags_as_required(["config", "workdir"])


def _only_warnings_from_libraries(record: std_logging.LogRecord) -> bool:
  """Orbax logs every step of every save at INFO; keep the console for the run's own progress."""
  return record.levelno >= std_logging.WARNING or "/vit_jax/" in record.pathname


def _no_disk_full_tracebacks(record: std_logging.LogRecord) -> bool:
  """Orbax logs a full disk from each of its save threads with a traceback; the run reports it once,
  in one line naming the workdir (`workdir.disk_full_reported`)."""
  from vit_jax import workdir  # pylint: disable=g-import-not-at-top
  return not (record.exc_info and workdir.is_disk_full(record.exc_info[1]))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.get_absl_handler().addFilter(_only_warnings_from_libraries)
  logging.get_absl_handler().addFilter(_no_disk_full_tracebacks)
  cpu_devices.use_host_devices_for(_CONFIG.value, num_processes=_NUM_PROCESSES.value)
  host_memory.reuse_freed_memory_for(_CONFIG.value)
  from vit_jax import distributed  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value or _DISTRIBUTED.value:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from vit_jax import config_checks, workdir  # pylint: disable=g-import-not-at-top
  try:
    _, results = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, workdir.WorkdirError, train.NonFiniteLossError) as e:
    # The user's to fix, and the message says how: one line, not a traceback.
    print(f"FATAL {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  summary = {k: v for k, v in results.items() if k != "config"}
  logging.info("Done: %s", json.dumps(summary))
  print(json.dumps(summary), flush=True)


def _unknown_override(argv: list[str]) -> str | None:
  """Names the first `--config.a.b=...` override whose key the config lacks, with the valid keys."""
  config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if config_arg is None:
    return None
  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("_experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for flag in argv:
    if not flag.startswith("--config."):
      continue
    node, walked = config, []
    for key in flag.split("=", 1)[0].removeprefix("--config.").split("."):
      if not hasattr(node, "keys") or key not in node:
        where = ".".join(walked) or "the config"
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        return f"Unknown config key {'.'.join(walked + [key])!r} in {flag!r}; valid keys of {where}: {valid}"
      node, walked = node[key], walked + [key]
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, flags.Error) as e:  # unknown key; a value of the wrong type
    message = _unknown_override(argv) or str(e)
    print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    sys.exit(1)


def run() -> None:
  """Console-script entry point (`vit-train`)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
