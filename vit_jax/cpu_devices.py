"""One XLA host device per CPU core, with the batch split over them (the default on CPU).

XLA:CPU runs one device's step as hundreds of small ops, handed one by one to a thread pool; for a small
ViT most of the step is that hand-off, not arithmetic (benchmarks/RESULTS.md: the digits model's ops
sum to a quarter of its step). Splitting the batch over one host device per core (the data axis of the
mesh) runs the cores side by side instead: on 2 cores the studies' train steps ran 1.25-1.4x faster,
ViT-S/16 as fast or faster, and the whole digits command as fast on a quiet machine and 1.25x faster
beside other work (benchmarks/RESULTS.md).

On unless `config.host_device_per_core` is False. `use_host_devices_for(config)` must run before JAX
initialises its backends (before the first array or `jax.devices()`); the entry points (training, the
studies, the predict and few-shot CLIs) call it first thing. It changes nothing when the config turns
it off, when the user set the device count
(`--xla_force_host_platform_device_count` in XLA_FLAGS, or JAX_NUM_CPU_DEVICES), when JAX may pick an
accelerator (JAX_PLATFORMS names another platform first, or a GPU/TPU plugin is installed), when the
config fixes its own mesh, or when no count above 1 divides its batch sizes. Only float reduction order
changes: the data order and the checkpoints are the same with 1 and N devices.
"""

import importlib.metadata
import importlib.util
import math
import os
from typing import Sequence

from absl import logging
import ml_collections

_DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"
# Each device holds a replica of the params and optimizer state (ViT-B/16 with Adam: ~1 GB); measured
# only on 2 cores, so many-core machines get at most this many.
MAX_HOST_DEVICES = 8
# Packages whose presence means JAX will pick a GPU or TPU when it initialises.
_ACCELERATOR_PACKAGES = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                         "jax_rocm7_plugin")


def accelerator_possible() -> bool:
  """True when JAX may initialise a GPU or TPU backend; decided without initialising any backend."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() != "cpu"
  if list(importlib.metadata.entry_points(group="jax_plugins")):
    return True
  if importlib.util.find_spec("jax_plugins") is not None:
    return True
  return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PACKAGES)


def host_device_count(batch_sizes: Sequence[int], cores: int) -> int:
  """The largest device count <= `cores` (and MAX_HOST_DEVICES) that divides every batch size."""
  common = math.gcd(*batch_sizes)
  return max(n for n in range(1, min(cores, MAX_HOST_DEVICES) + 1) if common % n == 0)


def config_batch_sizes(config: ml_collections.ConfigDict) -> list[int] | None:
  """The per-step batches that `config` splits over the mesh's data axis: the micro-batch, evaluation and
  few-shot batches. None unless `config.host_device_per_core` is on, or when the config fixes its mesh."""
  if not config.get("host_device_per_core") or config.mesh.data != -1 or config.mesh.model != 1:
    return None
  fewshot = config.get("fewshot") or {}
  sizes = [config.batch_size // max(config.optimizer.accum_steps, 1), config.eval_batch_size]
  if fewshot.get("shots"):
    sizes.append(fewshot.get("batch_size", 512))
  return sizes


def use_host_devices(batch_sizes: Sequence[int], num_processes: int = 1) -> int:
  """Sets one CPU device per core (at most, dividing every batch) before JAX initialises.

  Returns the device count set, or 0 when it left JAX alone (the reason is logged).
  """
  if _DEVICE_COUNT_FLAG in os.environ.get("XLA_FLAGS", "") or "JAX_NUM_CPU_DEVICES" in os.environ:
    logging.info("CPU devices: the count set in XLA_FLAGS / JAX_NUM_CPU_DEVICES is kept.")
    return 0
  if accelerator_possible():
    return 0
  cores = len(os.sched_getaffinity(0))
  count = host_device_count([size // num_processes for size in batch_sizes], cores)
  if count <= 1:
    logging.info("CPU devices: 1 (no count up to the %d cores divides the batch sizes %s).",
                 cores, list(batch_sizes))
    return 0
  import jax  # pylint: disable=g-import-not-at-top  (importing it does not initialise a backend)
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:
    logging.warning("CPU devices: JAX is initialised already; keeping its device count. Call "
                    "cpu_devices.use_host_devices_for(config) before any JAX computation.")
    return 0
  logging.info("CPU devices: %d host devices on %d cores, the batch split over them (set "
               "--config.host_device_per_core=False for one device).", count, cores)
  return count


def use_host_devices_for(*configs: ml_collections.ConfigDict, num_processes: int = 1) -> int:
  """`use_host_devices` for the batch sizes of every config a process will train or evaluate."""
  sizes = [config_batch_sizes(config) for config in configs]
  if not configs or any(s is None for s in sizes):
    return 0
  return use_host_devices([size for s in sizes for size in s], num_processes)
