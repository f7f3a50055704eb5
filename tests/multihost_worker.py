"""One process of the two-process test (tests/test_multihost.py): trains, prints a JSON summary."""

import json
import os
import sys

from tests.xla_flags import xla_flags

os.environ["XLA_FLAGS"] = xla_flags(2)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tests.test_train import tiny_config  # pylint: disable=g-import-not-at-top
from vit_jax import distributed  # pylint: disable=g-import-not-at-top
from vit_jax import train  # pylint: disable=g-import-not-at-top


def main(coordinator: str, process_id: int, workdir: str) -> None:
  distributed.initialize(coordinator, num_processes=2, process_id=process_id)
  state, results = train.train_and_evaluate(tiny_config(total_steps=6), workdir)
  # Replicated params: every process holds the whole tree; fingerprint this process's copy.
  local = [np.asarray(x.addressable_shards[0].data, np.float64) for x in jax.tree.leaves(state.params)]
  print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(),
                    "local_devices": jax.local_device_count(), "step": int(state.step),
                    "accuracy": results["accuracy"], "loss": results["loss"],
                    "fingerprint": [float(x.sum()) for x in local]}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
