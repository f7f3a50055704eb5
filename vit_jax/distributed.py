"""Multi-host start-up: find the cluster a process runs in and join its processes into one JAX job.

Every host runs the same command. `initialize` calls `jax.distributed.initialize` when it finds:
explicit coordinator variables (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, or the
matching flags), a SLURM job step (`srun`), or a Cloud TPU VM (libtpu and TPU chips; a pod slice's
workers find each other through the TPU metadata). Elsewhere the run stays single-process, unchanged.
Joining also starts JAX's preemption service, which `vit_jax.preemption` relies on.
"""

import glob
import importlib.util
import os
from collections.abc import Mapping

from absl import logging
import jax

COORDINATOR = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES = "JAX_NUM_PROCESSES"
PROCESS_ID = "JAX_PROCESS_ID"
# What jax's own SLURM detection needs: the variables `srun` sets for every task of a job step.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def on_tpu_vm() -> bool:
  """A Cloud TPU VM: libtpu installed and TPU chips attached (checked without starting a backend)."""
  return (importlib.util.find_spec("libtpu") is not None
          and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")))


def detect_cluster(environ: Mapping[str, str] = os.environ, tpu_vm: bool | None = None) -> str | None:
  """'coordinator', 'slurm' or 'tpu' for the multi-host environment found, None for a plain machine."""
  if environ.get(COORDINATOR):
    missing = [name for name in (NUM_PROCESSES, PROCESS_ID) if not environ.get(name)]
    if missing:
      raise ValueError(f"{COORDINATOR}={environ[COORDINATOR]} is set but {missing} are not: set all "
                       "three on every host (or none, to run on one machine).")
    return "coordinator"
  if all(environ.get(name) for name in _SLURM_VARS):
    return "slurm"
  if on_tpu_vm() if tpu_vm is None else tpu_vm:
    return "tpu"
  return None


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               environ: Mapping[str, str] = os.environ) -> bool:
  """Joins the processes of a multi-host run; True when it did. Arguments win over the environment."""
  if coordinator_address:
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  else:
    cluster = detect_cluster(environ)
    if cluster is None:
      return False
    kwargs = {}
    if cluster == "coordinator":
      kwargs = dict(coordinator_address=environ[COORDINATOR], num_processes=int(environ[NUM_PROCESSES]),
                    process_id=int(environ[PROCESS_ID]))
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
