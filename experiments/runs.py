"""One run of a study: a config file of configs/ with overrides, trained in its own workdir.

A run is finished when its workdir holds results.json: it is never trained again, and a stopped run
resumes from its last checkpoint. `execute` trains the unfinished runs one after another in this
process, or prints the command that launches each (`python -m vit_jax.main ...`, for a cluster or a
TPU VM); both build the same config from the same spec.

A run trains on one CPU device (`STUDY_PINS`) unless its study recorded its results on vit_jax.main's
default, one host device per core (`pins=()`: the data-scaling study): more devices change float
rounding, so each study keeps the device count its results were trained on. `--override
host_device_per_core=True` trains a pinned study's steps 1.25-1.5x faster on 2 cores
(benchmarks/RESULTS.md); accelerators ignore the key.
"""

import argparse
from collections.abc import Iterable, Sequence
import dataclasses
import importlib
import logging as std_logging
import shlex
from typing import Any

from absl import logging
import ml_collections

from configs import common
from vit_jax import cpu_devices
from vit_jax import host_memory
from vit_jax import workdir as workdir_lib

# Keys that change how a run executes (logging, storage, layout on devices), not what it computes: a
# finished run stored with other values of them is still the run a study asks for.
EXECUTION_KEYS = ("log_every", "compilation_cache", "profile_steps", "peak_flops_per_device",
                  "keep_checkpoints", "keep_checkpoint_every", "mesh", "sharding", "sharding_rules",
                  "eval_batch_size", "host_device_per_core", "reuse_freed_host_memory", "dataset.threads",
                  "dataset.prefetch", "dataset.ram_budget_gb", "dataset.parallel_files",
                  "dataset.image_index_dir")

STUDY_PINS = (("host_device_per_core", False),)


class StaleRunError(ValueError):
  """A study's workdir holds a finished run of another config than the study asks for now."""


@dataclasses.dataclass(frozen=True)
class Run:
  config_module: str  # under configs/, e.g. "fashion_mnist" or "transfer.cifar10"
  arg: str | None
  workdir: str
  overrides: tuple[tuple[str, Any], ...] = ()  # ("dataset.train_split", "train[:1000]"), ...
  pins: tuple[tuple[str, Any], ...] = STUDY_PINS  # () for a study recorded on vit_jax.main's defaults

  def config(self) -> ml_collections.ConfigDict:
    module = importlib.import_module(f"configs.{self.config_module}")
    config = module.get_config(self.arg) if self.arg else module.get_config()
    for key, value in self.all_overrides:
      common.set_override(config, key, value, where=f"configs/{self.config_path}")
    return config

  @property
  def all_overrides(self) -> tuple[tuple[str, Any], ...]:
    """The study's pins, then the run's own overrides (which win)."""
    return self.pins + self.overrides

  @property
  def config_path(self) -> str:
    return self.config_module.replace(".", "/") + ".py"

  def command(self) -> str:
    config = f"configs/{self.config_path}" + (f":{self.arg}" if self.arg else "")
    flags = [f"--config={config}", f"--workdir={self.workdir}"]
    flags += [f"--config.{key}={_flag_value(value)}" for key, value in self.all_overrides]
    return " ".join(["python -m vit_jax.main"] + [shlex.quote(flag) for flag in flags])

  def results(self) -> dict[str, Any] | None:
    """The finished run's results.json, or None while it is unfinished.

    Raises `StaleRunError` when the run finished with a config that differs from this run's in what it
    computes (a study rerun after its code or flags changed): its results would be silently reused.
    """
    results = workdir_lib.read_results(self.workdir)
    if results is None:
      return None
    changes = workdir_lib.changes_outside(self.workdir, self.config(), EXECUTION_KEYS)
    if changes:
      listing = "; ".join(f"{k}: {old!r} in the run, {new!r} now" for k, (old, new) in changes.items())
      raise StaleRunError(
          f"{self.workdir} holds a finished run of another config ({listing}). Move it away to rerun "
          "it, or use another --workdir_root for this study.")
    return results


def shared_compilation_cache(workdir_root: str) -> tuple[str, str]:
  """The override that gives all runs of a study one compilation cache: its seeds and arms compile the
  same steps (a 39-step fine-tuning run took about half the wall time with it)."""
  return ("compilation_cache", f"{workdir_root}/compilation_cache")


def _flag_value(value: Any) -> str:
  """How ml_collections' config flags parse `value` back (tuples as Python literals)."""
  return repr(tuple(value)) if isinstance(value, (tuple, list)) else str(value)


def add_study_flags(parser: argparse.ArgumentParser, workdir_root: str, *, override: bool = True) -> None:
  """The flags every study shares: where runs and results go, overrides for every run, --print_only."""
  parser.add_argument("--workdir_root", default=workdir_root)
  parser.add_argument("--output_dir", default="experiments/results",
                      help="Where the study's CSV, table and plot go.")
  if override:
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Config overrides for every run, e.g. total_steps=2000.")
  parser.add_argument("--print_only", action="store_true",
                      help="Print the launch command of each run that can start now instead of training.")


def parse_overrides(pairs: Sequence[str]) -> tuple[tuple[str, Any], ...]:
  """['total_steps=20', 'dataset.train_split=train[:64]'] -> typed (key, value) pairs."""
  return tuple(common.parse_override(pair) for pair in pairs)


def execute(runs: Iterable[Run], *, print_only: bool) -> None:
  """Trains (or prints the command of) every run that has no results yet; stops at a SIGTERM."""
  runs = list(runs)
  configs = [run.config() for run in runs]
  cpu_devices.use_host_devices_for(*configs)
  host_memory.reuse_freed_memory_for(*configs)
  from vit_jax import train  # pylint: disable=g-import-not-at-top  (imports TensorFlow)

  for run in runs:
    if run.results() is not None:
      logging.info("Finished already, skipped: %s", run.workdir)
    elif print_only:
      print(run.command(), flush=True)
    else:
      logging.info("Running %s", run.command())
      _, results = train.train_and_evaluate(run.config(), run.workdir)
      if results["preempted"]:  # SIGTERM is meant for the whole study, not for one of its runs
        raise SystemExit(f"SIGTERM: {run.workdir} saved its last step and the study stops; rerun "
                         "the same command to resume.")


def log_progress() -> None:
  """INFO lines from vit_jax and the studies (progress, evaluations); only warnings from libraries."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING
      or any(part in record.pathname for part in ("/vit_jax/", "/experiments/")))
