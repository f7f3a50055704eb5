"""Which multi-host environment a process is in decides whether it joins a distributed run."""

import pytest

from vit_jax import distributed

SRUN = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
COORDINATOR = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}


@pytest.mark.parametrize("environ, tpu_vm, expected", [
    ({}, False, None),
    ({"SLURM_JOB_ID": "7"}, False, None),  # sbatch's own shell, outside srun: one process
    (SRUN, False, "slurm"),
    ({}, True, "tpu"),
    ({**SRUN, **COORDINATOR}, True, "coordinator"),  # explicit variables win
])
def test_detect_cluster(environ, tpu_vm, expected):
  assert distributed.detect_cluster(environ, tpu_vm=tpu_vm) == expected


def test_a_coordinator_without_process_count_and_id_is_an_error_naming_them():
  with pytest.raises(ValueError, match=r"JAX_NUM_PROCESSES.*JAX_PROCESS_ID"):
    distributed.detect_cluster({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, tpu_vm=False)


def test_a_plain_machine_stays_single_process():
  assert not distributed.initialize(environ={})
